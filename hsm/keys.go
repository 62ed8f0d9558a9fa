package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// GenerateKey creates the AES-256 token object of ref. Calls are serialised within the
// process.
//
// NOTE: two processes generating the same ref at the same moment can both pass the
// existence check and create two objects with one CKA_ID. Lookups then use the first
// object found.
func (m *Module) GenerateKey(ctx context.Context, ref KeyRef) error {
	template, err := secretKeyTemplate(ref)
	if err != nil {
		return err
	}

	m.genMu.Lock()
	defer m.genMu.Unlock()

	err = m.do(ctx, true, func(c *conn, s *session) error {
		handles, err := c.find(s, secretKeyLookup(ref), 1)
		if err != nil {
			return err
		}
		if len(handles) > 0 {
			return fmt.Errorf("%w: %s", ErrKeyExists, ref)
		}

		// A token at fault finds no object either, and a second key under a ref in use
		// would make everything sealed with the first one unreadable.
		if err := c.missingKey(ref, ""); !errors.Is(err, ErrKeyNotFound) {
			return err
		}

		_, err = c.c11.GenerateSecretKeyWithAttributes(template, aesKeyBits, crypto11.CipherAES)
		if err != nil {
			return fmt.Errorf("C_GenerateKey: %w", err)
		}

		c.found.add(ref)
		return nil
	})
	if err != nil {
		return fmt.Errorf("generate key %s: %w", ref, err)
	}

	m.log.Info("key generated", "key_ref", ref.String())
	return nil
}

// DestroyKey destroys the token object of ref and every session copy of it in this process.
//
// NOTE: other processes sharing the token keep their session copies, so they can still use
// the key until their sessions close or their copies are evicted.
func (m *Module) DestroyKey(ctx context.Context, ref KeyRef) error {
	m.genMu.Lock()
	defer m.genMu.Unlock()

	err := m.do(ctx, true, func(c *conn, s *session) error {
		keys, err := c.c11.FindKeys(ref.ObjectID(), nil)
		if err != nil {
			return fmt.Errorf("find key: %w", err)
		}
		if len(keys) == 0 {
			return c.missingKey(ref, "")
		}

		for _, key := range keys {
			if err := key.Delete(); err != nil {
				return fmt.Errorf("C_DestroyObject: %w", err)
			}
		}

		c.invalidate()
		c.found.forget(ref)
		return nil
	})
	if err != nil {
		return fmt.Errorf("destroy key %s: %w", ref, err)
	}

	m.log.Info("key destroyed", "key_ref", ref.String())
	return nil
}

// KeyExists reports whether the token contains the secret key object of ref. It searches
// the token, not the handle cache, so keys that other processes created or destroyed are
// reported correctly. A token fault returns an error wrapping ErrUnavailable, never false.
func (m *Module) KeyExists(ctx context.Context, ref KeyRef) (bool, error) {
	var found bool
	err := m.do(ctx, false, func(c *conn, s *session) error {
		handles, err := c.find(s, secretKeyLookup(ref), 1)
		if err != nil {
			return err
		}

		found = len(handles) > 0
		if found {
			c.found.add(ref)
			return nil
		}
		if err := c.missingKey(ref, ""); !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("look up key %s: %w", ref, err)
	}

	return found, nil
}

// ListKeys returns every secret key token object whose CKA_ID starts with "kms:" and parses
// as a KeyRef. Objects of other applications are skipped.
func (m *Module) ListKeys(ctx context.Context) ([]KeyRef, error) {
	var refs []KeyRef
	err := m.do(ctx, false, func(c *conn, s *session) error {
		refs = refs[:0]

		handles, err := c.find(s, secretKeyListing(), 0)
		if err != nil {
			return err
		}
		if len(handles) == 0 {
			// A token at fault finds no object, which must not read as an empty token.
			if err := c.checkToken(); err != nil {
				return err
			}
		}

		for _, h := range handles {
			attrs, err := c.p11.GetAttributeValue(s.handle, h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
			})
			if err != nil {
				return fmt.Errorf("C_GetAttributeValue CKA_ID: %w", err)
			}

			ref, err := ParseObjectID(attrs[0].Value)
			if err != nil {
				continue
			}
			refs = append(refs, ref)
		}

		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}

	return refs, nil
}

// KeyAttributes are the custody attributes of a key's token object, for tests and
// compliance demos.
type KeyAttributes struct {
	Token            bool // CKA_TOKEN
	Sensitive        bool // CKA_SENSITIVE
	Private          bool // CKA_PRIVATE
	Extractable      bool // CKA_EXTRACTABLE
	NeverExtractable bool // CKA_NEVER_EXTRACTABLE
	AlwaysSensitive  bool // CKA_ALWAYS_SENSITIVE
	// ValueReadRejected reports that the token rejected reading CKA_VALUE with
	// CKR_ATTRIBUTE_SENSITIVE.
	ValueReadRejected bool
}

// KeyAttributes reads the custody attributes of the token object of ref and tries to read
// CKA_VALUE. A value the token returns is cleared at once and never returned.
func (m *Module) KeyAttributes(ctx context.Context, ref KeyRef) (KeyAttributes, error) {
	var ka KeyAttributes
	err := m.do(ctx, false, func(c *conn, s *session) error {
		h, err := c.tokenHandle(s, ref)
		if err != nil {
			return err
		}

		ka, err = readKeyAttributes(c.p11, s.handle, h)
		return err
	})
	if err != nil {
		return KeyAttributes{}, fmt.Errorf("read attributes of key %s: %w", ref, err)
	}

	return ka, nil
}

// readKeyAttributes reads the attributes of KeyAttributes from object h.
func readKeyAttributes(
	p11 *pkcs11.Ctx, s pkcs11.SessionHandle, h pkcs11.ObjectHandle,
) (KeyAttributes, error) {
	types := []uint{
		pkcs11.CKA_TOKEN, pkcs11.CKA_SENSITIVE, pkcs11.CKA_PRIVATE, pkcs11.CKA_EXTRACTABLE,
		pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_ALWAYS_SENSITIVE,
	}
	template := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		template[i] = pkcs11.NewAttribute(t, nil)
	}

	attrs, err := p11.GetAttributeValue(s, h, template)
	if err != nil {
		return KeyAttributes{}, fmt.Errorf("C_GetAttributeValue: %w", err)
	}

	values := make(map[uint]bool, len(attrs))
	for _, a := range attrs {
		values[a.Type] = len(a.Value) == 1 && a.Value[0] == 1
	}

	ka := KeyAttributes{
		Token:            values[pkcs11.CKA_TOKEN],
		Sensitive:        values[pkcs11.CKA_SENSITIVE],
		Private:          values[pkcs11.CKA_PRIVATE],
		Extractable:      values[pkcs11.CKA_EXTRACTABLE],
		NeverExtractable: values[pkcs11.CKA_NEVER_EXTRACTABLE],
		AlwaysSensitive:  values[pkcs11.CKA_ALWAYS_SENSITIVE],
	}

	value, err := p11.GetAttributeValue(s, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil),
	})
	switch {
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)):
		ka.ValueReadRejected = true
	case err == nil:
		for _, a := range value {
			clear(a.Value)
		}
	default:
		return KeyAttributes{}, fmt.Errorf("C_GetAttributeValue CKA_VALUE: %w", err)
	}

	return ka, nil
}
