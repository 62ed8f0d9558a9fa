package service

import (
	"context"
	"errors"

	"github.com/hsmkms/kms/service/auth"
)

// Limits of encrypt-data and gen-random, from the Huawei Cloud KMS API v1.0: plain_text
// is 1 to 4096 bytes after UTF-8 encoding, random_data_length 8 to 8192 bits in whole
// bytes.
const (
	MaxDataPlaintextBytes = 4096
	MinRandomBits         = 8
	MaxRandomBits         = 8192
)

// AlgorithmSymmetricDefault is the only encryption_algorithm of symmetric keys.
const AlgorithmSymmetricDefault = "SYMMETRIC_DEFAULT"

// EncryptDataInput is an encrypt-data request.
type EncryptDataInput struct {
	KeyRef string
	// Plaintext is plain_text as UTF-8 bytes, 1 to MaxDataPlaintextBytes.
	Plaintext []byte
	// Algorithm is encryption_algorithm: empty or SYMMETRIC_DEFAULT.
	Algorithm string
	Binding   Binding
}

// EncryptData seals a small plaintext directly with the CMK. The ciphertext has format
// FormatData and names its key and version, so DecryptData needs no key id.
func (s *Service) EncryptData(ctx context.Context, p auth.Principal, in EncryptDataInput) (DataKeyOutput, error) {
	if err := checkAlgorithm(in.Algorithm); err != nil {
		return DataKeyOutput{}, err
	}
	if len(in.Plaintext) == 0 {
		return DataKeyOutput{}, Errorf(CodeMissingParameter, "plain_text is missing")
	}
	if len(in.Plaintext) > MaxDataPlaintextBytes {
		return DataKeyOutput{}, Errorf(CodeInvalidPlainText,
			"plain_text is %d bytes in UTF-8; the maximum is %d", len(in.Plaintext),
			MaxDataPlaintextBytes)
	}

	k, err := s.usableKeyFor(ctx, p, auth.OpEncryptData, in.KeyRef)
	if err != nil {
		return DataKeyOutput{}, err
	}
	return s.seal(ctx, k, FormatData, in.Plaintext, in.Binding)
}

// DecryptDataInput is a decrypt-data request.
type DecryptDataInput struct {
	Ciphertext []byte
	// KeyRef is the optional key_id; when given it must be the key the ciphertext names.
	KeyRef    string
	Algorithm string
	Binding   Binding
}

// DecryptData opens a ciphertext of EncryptData. The caller clears the plaintext.
func (s *Service) DecryptData(ctx context.Context, p auth.Principal, in DecryptDataInput) (DataKeyOutput, error) {
	if err := checkAlgorithm(in.Algorithm); err != nil {
		return DataKeyOutput{}, err
	}

	ct, err := ParseCiphertext(in.Ciphertext)
	if err != nil {
		return DataKeyOutput{}, err
	}
	if ct.Format != FormatData {
		return DataKeyOutput{}, errCipherText("cipher_text is not an encrypt-data ciphertext")
	}
	if in.KeyRef != "" && in.KeyRef != ct.KeyID {
		return DataKeyOutput{}, errCipherText("cipher_text was not made with the key key_id names")
	}

	k, err := s.usableKeyFor(ctx, p, auth.OpDecryptData, ct.KeyID)
	if err != nil {
		return DataKeyOutput{}, err
	}

	pt, err := s.open(ctx, k, ct, in.Binding)
	if err != nil {
		return DataKeyOutput{}, err
	}
	return DataKeyOutput{KeyID: k.ID, Version: ct.Version, Plaintext: pt}, nil
}

// GenRandom returns bits/8 bytes from the token's random number generator. bits must be
// a multiple of 8 from 8 to 8192 (KMS.1801 otherwise).
func (s *Service) GenRandom(ctx context.Context, p auth.Principal, bits int) ([]byte, error) {
	if err := s.authorize(ctx, p, auth.OpGenRandom, nil); err != nil {
		return nil, err
	}
	if bits < MinRandomBits || bits > MaxRandomBits || bits%8 != 0 {
		return nil, Errorf(CodeInvalidRandomLength,
			"random_data_length must be a multiple of 8 from %d to %d bits", MinRandomBits,
			MaxRandomBits)
	}

	b, err := s.token.Random(ctx, bits/8)
	if err != nil {
		return nil, tokenError("generate random", err)
	}
	return b, nil
}

// ReEncryptInput is a re-encrypt request.
type ReEncryptInput struct {
	// Ciphertext is a data key ciphertext (FormatDataKey) or an encrypt-data ciphertext
	// (FormatData); the output has the same format.
	Ciphertext []byte
	// SourceKeyRef is the optional source_key_id; when given it must be the key the
	// ciphertext names.
	SourceKeyRef  string
	DestKeyRef    string
	SourceBinding Binding
	DestBinding   Binding
}

// ReEncryptOutput is the resealed ciphertext and the key that made the source.
type ReEncryptOutput struct {
	DataKeyOutput
	SourceKeyID string
}

// ReEncrypt opens a ciphertext under its key with the source binding and seals the
// plaintext under the destination key with the destination binding. The plaintext
// exists only in this process, between the token's C_Decrypt and C_Encrypt, and is
// cleared before returning. The caller needs the decrypt operation on the source key
// and the encrypt operation on the destination key, each for the ciphertext's format.
func (s *Service) ReEncrypt(ctx context.Context, p auth.Principal, in ReEncryptInput) (ReEncryptOutput, error) {
	ct, err := ParseCiphertext(in.Ciphertext)
	if err != nil {
		return ReEncryptOutput{}, err
	}
	if in.SourceKeyRef != "" && in.SourceKeyRef != ct.KeyID {
		return ReEncryptOutput{}, errCipherText("cipher_text was not made with source_key_id")
	}
	if in.DestKeyRef == "" {
		return ReEncryptOutput{}, Errorf(CodeMissingParameter, "destination_key_id is missing")
	}

	decryptOp, encryptOp := auth.OpDecryptDatakey, auth.OpEncryptDatakey
	if ct.Format == FormatData {
		decryptOp, encryptOp = auth.OpDecryptData, auth.OpEncryptData
	}

	src, err := s.usableKeyFor(ctx, p, decryptOp, ct.KeyID)
	if err != nil {
		return ReEncryptOutput{}, namingKey("the source key", err)
	}
	dst, err := s.usableKeyFor(ctx, p, encryptOp, in.DestKeyRef)
	if err != nil {
		return ReEncryptOutput{}, namingKey("the destination key", err)
	}

	pt, err := s.open(ctx, src, ct, in.SourceBinding)
	if err != nil {
		return ReEncryptOutput{}, err
	}
	defer clear(pt)

	out, err := s.seal(ctx, dst, ct.Format, pt, in.DestBinding)
	if err != nil {
		return ReEncryptOutput{}, err
	}
	return ReEncryptOutput{DataKeyOutput: out, SourceKeyID: src.ID}, nil
}

func checkAlgorithm(algorithm string) error {
	if algorithm != "" && algorithm != AlgorithmSymmetricDefault {
		return Errorf(CodeInvalidParameter,
			"encryption_algorithm %q is not supported for AES_256 keys; use %s", algorithm,
			AlgorithmSymmetricDefault)
	}
	return nil
}

// namingKey returns err with its client message prefixed by keyRole, so that a caller of
// a call with two keys learns which one the error is about. Errors that are not *Error
// are returned unchanged.
func namingKey(keyRole string, err error) error {
	var se *Error
	if !errors.As(err, &se) {
		return err
	}
	return &Error{Code: se.Code, Message: keyRole + ": " + se.Message, Err: se.Err}
}
