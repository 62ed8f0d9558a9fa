package hsm

import (
	"fmt"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// Mechanisms and object templates live here so that a port to another HSM changes one file.

// gcmTagBits is the GCM tag length passed in CK_GCM_PARAMS.ulTagBits.
const gcmTagBits = GCMTagSize * 8

// aesKeyBits is the length of every customer master key.
const aesKeyBits = 256

// gcmMechanism returns the CKM_AES_GCM mechanism for params.
func gcmMechanism(params *pkcs11.GCMParams) []*pkcs11.Mechanism {
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
}

// secretKeyTemplate returns the template of the AES-256 token object for ref. crypto11 adds
// CKA_CLASS, CKA_KEY_TYPE and CKA_VALUE_LEN.
func secretKeyTemplate(ref KeyRef) (crypto11.AttributeSet, error) {
	id := ref.ObjectID()

	attrs := crypto11.NewAttributeSet()
	for _, a := range []*pkcs11.Attribute{
		// A token object survives the session and the process, and other replicas sharing
		// the token find it.
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		// The value can never be read out in plaintext.
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		// Only a logged-in user can see or use the key.
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		// The key cannot be wrapped out of the token, not even encrypted.
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		// Seal and Open are C_Encrypt and C_Decrypt with CKM_AES_GCM.
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		// A CMK never wraps or unwraps other keys, so it cannot be used to export them.
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		// No MAC use, so the key serves exactly one purpose.
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		// The CKA_ID is how every lookup finds the key version again.
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		// The label carries the same text so that pkcs11-tool listings are readable.
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, id),
	} {
		if err := attrs.Set(a.Type, a.Value); err != nil {
			return nil, fmt.Errorf("build key template for %s: %w", ref, err)
		}
	}

	return attrs, nil
}

// sessionCopyTemplate is the C_CopyObject template of the per-session copy of a key. Only
// CKA_TOKEN changes: the copy keeps CKA_SENSITIVE, CKA_EXTRACTABLE and every usage attribute of
// the token object, and the token destroys it when the session closes.
func sessionCopyTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		// A session object skips SoftHSM2's check of its file store on each use, which makes
		// every operation about twice as fast.
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
	}
}

// secretKeyLookup is the C_FindObjectsInit template that finds the token object of ref.
func secretKeyLookup(ref KeyRef) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_ID, ref.ObjectID()),
	}
}

// secretKeyListing is the C_FindObjectsInit template for ListKeys. The "kms:" prefix is
// checked after the search because PKCS#11 matches attributes exactly.
func secretKeyListing() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	}
}

// signingKeyTemplates returns the public and private templates of the ECDSA P-256 pair for
// ref. crypto11 adds CKA_CLASS, CKA_KEY_TYPE and CKA_EC_PARAMS.
func signingKeyTemplates(ref KeyRef) (public, private crypto11.AttributeSet, err error) {
	id := ref.ObjectID()

	public, err = crypto11.NewAttributeSetWithIDAndLabel(id, id)
	if err != nil {
		return nil, nil, fmt.Errorf("build public key template for %s: %w", ref, err)
	}

	// The public key verifies only, and anyone may read it.
	if err := public.Set(pkcs11.CKA_VERIFY, true); err != nil {
		return nil, nil, fmt.Errorf("build public key template for %s: %w", ref, err)
	}

	private, err = crypto11.NewAttributeSetWithIDAndLabel(id, id)
	if err != nil {
		return nil, nil, fmt.Errorf("build private key template for %s: %w", ref, err)
	}

	for _, a := range []*pkcs11.Attribute{
		// The pair outlives the process and is shared by replicas.
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		// The private value never leaves the token in plaintext or wrapped.
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		// Only a logged-in user can use it.
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		// Signing is its only use.
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
	} {
		if err := private.Set(a.Type, a.Value); err != nil {
			return nil, nil, fmt.Errorf("build private key template for %s: %w", ref, err)
		}
	}

	return public, private, nil
}
