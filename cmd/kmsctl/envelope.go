package main

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Envelope file format of encrypt-file and decrypt-file:
//
//	magic      8 bytes "KMSENV01"
//	headerLen  4 bytes, big-endian
//	header     headerLen bytes of JSON (envelopeHeader)
//	chunks     each: flag (1 byte: 0 more follow, 1 final), length (4 bytes, big-endian),
//	           then length bytes of AES-256-GCM output (data and 16-byte tag)
//
// Chunk i is sealed with the file's data key, nonce = noncePrefix (7 bytes) || i
// (4 bytes, big-endian) || flag, and AAD = the header bytes. So a chunk cannot be moved,
// dropped, or turned into the last one, and the header cannot be changed; a file cut
// short lacks its final chunk and fails. Every file has exactly one final chunk, which
// may be empty.
const (
	envelopeMagic    = "KMSENV01"
	defaultChunkSize = 64 << 10
	maxChunkSize     = 16 << 20
	maxHeaderSize    = 64 << 10
	noncePrefixSize  = 7
)

type envelopeHeader struct {
	KeyID             string            `json:"key_id"`
	CipherText        string            `json:"cipher_text"`
	DataKeyLength     int               `json:"datakey_length"`
	ChunkSize         int               `json:"chunk_size"`
	NoncePrefix       []byte            `json:"nonce_prefix"`
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
}

func chunkNonce(prefix []byte, index uint32, final bool) []byte {
	nonce := make([]byte, 0, 12)
	nonce = append(nonce, prefix...)
	nonce = binary.BigEndian.AppendUint32(nonce, index)
	if final {
		return append(nonce, 1)
	}
	return append(nonce, 0)
}

// sealStream writes the envelope of src to dst with the data key dek, whose KMS
// ciphertext and context are in h. It reads and writes one chunk at a time.
func sealStream(dst io.Writer, src io.Reader, dek []byte, h envelopeHeader) error {
	if h.ChunkSize == 0 {
		h.ChunkSize = defaultChunkSize
	}
	h.NoncePrefix = make([]byte, noncePrefixSize)
	if _, err := rand.Read(h.NoncePrefix); err != nil {
		return err
	}
	aead, err := newAEAD(dek)
	if err != nil {
		return err
	}

	header, err := json.Marshal(h)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(dst)
	w.WriteString(envelopeMagic)
	binary.Write(w, binary.BigEndian, uint32(len(header)))
	w.Write(header)

	r := bufio.NewReaderSize(src, h.ChunkSize+1)
	buf := make([]byte, h.ChunkSize)
	var sealed []byte
	for index := uint32(0); ; index++ {
		n, err := io.ReadFull(r, buf)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("reading the input: %w", err)
		}
		_, peekErr := r.Peek(1)
		final := peekErr != nil
		if final && !errors.Is(peekErr, io.EOF) {
			return fmt.Errorf("reading the input: %w", peekErr)
		}

		sealed = aead.Seal(sealed[:0], chunkNonce(h.NoncePrefix, index, final), buf[:n], header)
		flag := byte(0)
		if final {
			flag = 1
		}
		w.WriteByte(flag)
		binary.Write(w, binary.BigEndian, uint32(len(sealed)))
		if _, err := w.Write(sealed); err != nil {
			return fmt.Errorf("writing the output: %w", err)
		}
		if final {
			break
		}
		if index == ^uint32(0) {
			return errors.New("the input has too many chunks")
		}
	}
	clear(buf)
	return w.Flush()
}

// readEnvelopeHeader reads the magic and the header of an envelope file.
func readEnvelopeHeader(r io.Reader) (envelopeHeader, []byte, error) {
	magic := make([]byte, len(envelopeMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != envelopeMagic {
		return envelopeHeader{}, nil, errors.New("the input is not a kmsctl envelope file")
	}
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil || n == 0 || n > maxHeaderSize {
		return envelopeHeader{}, nil, errors.New("the envelope header length is invalid")
	}
	header := make([]byte, n)
	if _, err := io.ReadFull(r, header); err != nil {
		return envelopeHeader{}, nil, errors.New("the envelope header is truncated")
	}

	var h envelopeHeader
	if err := json.Unmarshal(header, &h); err != nil {
		return envelopeHeader{}, nil, fmt.Errorf("the envelope header is not valid JSON: %w", err)
	}
	if h.ChunkSize < 1 || h.ChunkSize > maxChunkSize || len(h.NoncePrefix) != noncePrefixSize {
		return envelopeHeader{}, nil, errors.New("the envelope header has invalid chunk parameters")
	}
	return h, header, nil
}

// openStream decrypts the chunks that follow the header into dst. It fails on any
// changed, missing, reordered or trailing chunk; output written before such a failure
// must be discarded by the caller.
func openStream(dst io.Writer, r io.Reader, dek []byte, h envelopeHeader, header []byte) error {
	aead, err := newAEAD(dek)
	if err != nil {
		return err
	}

	br := bufio.NewReader(r)
	buf := make([]byte, 0, h.ChunkSize+aead.Overhead())
	var plain []byte
	for index := uint32(0); ; index++ {
		flag, err := br.ReadByte()
		if err != nil {
			return errors.New("the envelope file is truncated: its final chunk is missing")
		}
		var n uint32
		if err := binary.Read(br, binary.BigEndian, &n); err != nil || flag > 1 ||
			int(n) > h.ChunkSize+aead.Overhead() || int(n) < aead.Overhead() {
			return fmt.Errorf("chunk %d is malformed", index)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("chunk %d is truncated", index)
		}

		final := flag == 1
		plain, err = aead.Open(plain[:0], chunkNonce(h.NoncePrefix, index, final), buf, header)
		if err != nil {
			return fmt.Errorf("chunk %d failed authentication: the file was changed", index)
		}
		if _, err := dst.Write(plain); err != nil {
			return fmt.Errorf("writing the output: %w", err)
		}
		if final {
			break
		}
	}
	clear(plain)

	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return errors.New("the envelope file has data after its final chunk")
	}
	return nil
}

func newAEAD(dek []byte) (cipher.AEAD, error) {
	if len(dek) != 32 {
		return nil, fmt.Errorf("the data key is %d bytes, want 32 for AES-256", len(dek))
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
