package hsm

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

func TestGenerateKeyTwice(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "twice", Version: 1}
	generateTestKey(t, m, ref)

	err := m.GenerateKey(context.Background(), ref)
	if !errors.Is(err, ErrKeyExists) {
		t.Errorf("second GenerateKey returned %v, expected ErrKeyExists", err)
	}
}

func TestDestroyKey(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "destroyed", Version: 1}
	generateTestKey(t, m, ref)
	ctx := context.Background()

	// Seal first so that the session holds a copy that DestroyKey must also remove.
	sealed, err := m.Seal(ctx, ref, []byte("data"), nil)
	if err != nil {
		t.Fatal(err)
	}

	if err := m.DestroyKey(ctx, ref); err != nil {
		t.Fatalf("DestroyKey: %v", err)
	}

	if _, err := m.Open(ctx, ref, sealed.IV, sealed.Ciphertext, nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Open after destroy returned %v, expected ErrKeyNotFound", err)
	}
	if _, err := m.Seal(ctx, ref, []byte("data"), nil); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Seal after destroy returned %v, expected ErrKeyNotFound", err)
	}
	if err := m.DestroyKey(ctx, ref); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("second DestroyKey returned %v, expected ErrKeyNotFound", err)
	}

	exists, err := m.KeyExists(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("KeyExists after destroy returned true")
	}
}

func TestListKeys(t *testing.T) {
	m := openTestModule(t, nil)
	ctx := context.Background()
	refs := []KeyRef{
		{KeyID: "0d6a3c2e-5b1f-4f7a-9c3e-2a1b4c5d6e7f", Version: 1},
		{KeyID: "0d6a3c2e-5b1f-4f7a-9c3e-2a1b4c5d6e7f", Version: 2},
		{KeyID: "system-credentials", Version: 1},
	}
	for _, ref := range refs {
		generateTestKey(t, m, ref)
	}

	// A key of another application, whose CKA_ID lacks the "kms:" prefix.
	c, release, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	other := []byte("other-app")
	_, err = c.c11.GenerateSecretKeyWithLabel(other, other, 256, crypto11.CipherAES)
	release()
	if err != nil {
		t.Fatal(err)
	}

	got, err := m.ListKeys(ctx)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}

	cmp := func(a, b KeyRef) int {
		if a.KeyID != b.KeyID {
			return compareStrings(a.KeyID, b.KeyID)
		}
		return int(a.Version) - int(b.Version)
	}
	slices.SortFunc(got, cmp)
	slices.SortFunc(refs, cmp)
	if !slices.Equal(got, refs) {
		t.Errorf("ListKeys returned %v, expected %v", got, refs)
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestKeyAttributes(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "custody", Version: 1}
	generateTestKey(t, m, ref)

	got, err := m.KeyAttributes(context.Background(), ref)
	if err != nil {
		t.Fatalf("KeyAttributes: %v", err)
	}

	want := KeyAttributes{
		Token:             true,
		Sensitive:         true,
		Private:           true,
		Extractable:       false,
		NeverExtractable:  true,
		AlwaysSensitive:   true,
		ValueReadRejected: true,
	}
	if got != want {
		t.Errorf("KeyAttributes returned %+v, expected %+v", got, want)
	}
}

func TestSessionCopyAttributes(t *testing.T) {
	m := openTestModule(t, nil)
	ref := KeyRef{KeyID: "copy-custody", Version: 1}
	generateTestKey(t, m, ref)

	err := m.do(context.Background(), false, func(c *conn, s *session) error {
		h, err := c.sessionKey(s, ref)
		if err != nil {
			return err
		}

		got, err := readKeyAttributes(c.p11, s.handle, h)
		if err != nil {
			return err
		}

		if got.Token {
			t.Error("session copy has CKA_TOKEN true")
		}
		if !got.Sensitive || got.Extractable || !got.Private {
			t.Errorf("session copy lost custody attributes: %+v", got)
		}
		if !got.ValueReadRejected {
			t.Error("reading CKA_VALUE of the session copy was not rejected")
		}

		attrs, err := c.p11.GetAttributeValue(s.handle, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, nil),
		})
		if err != nil {
			return err
		}
		if attrs[0].Value[0] != 0 {
			t.Error("session copy has CKA_WRAP true")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
