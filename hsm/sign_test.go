package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestSignVerifies(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "system-audit", Version: 1}
	ctx := context.Background()

	if err := m.GenerateSigningKey(ctx, ref); err != nil {
		t.Fatalf("GenerateSigningKey: %v", err)
	}

	digest := sha256.Sum256([]byte("audit record"))
	signature, err := m.Sign(ctx, ref, digest[:])
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}

	public, err := m.PublicKey(ctx, ref)
	if err != nil {
		t.Fatalf("PublicKey: %v", err)
	}
	ecKey, ok := public.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("PublicKey returned %T, expected *ecdsa.PublicKey", public)
	}
	if ecKey.Curve != elliptic.P256() {
		t.Errorf("public key curve is %s, expected P-256", ecKey.Curve.Params().Name)
	}
	if !ecdsa.VerifyASN1(ecKey, digest[:], signature) {
		t.Error("signature does not verify")
	}
}

func TestSigningKeyErrors(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "system-audit", Version: 1}
	missing := KeyRef{KeyID: "system-missing", Version: 1}
	ctx := context.Background()
	digest := sha256.Sum256([]byte("record"))

	if err := m.GenerateSigningKey(ctx, ref); err != nil {
		t.Fatal(err)
	}

	if err := m.GenerateSigningKey(ctx, ref); !errors.Is(err, ErrKeyExists) {
		t.Errorf("second GenerateSigningKey returned %v, expected ErrKeyExists", err)
	}
	if _, err := m.Sign(ctx, missing, digest[:]); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Sign with a missing key returned %v, expected ErrKeyNotFound", err)
	}
	if _, err := m.PublicKey(ctx, missing); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("PublicKey of a missing key returned %v, expected ErrKeyNotFound", err)
	}
	if _, err := m.Sign(ctx, ref, digest[:16]); err == nil {
		t.Error("Sign accepted a 16-byte digest")
	}
}
