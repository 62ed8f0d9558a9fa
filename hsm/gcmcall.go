package hsm

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

// The PKCS#11 types that the one-call GCM functions need, with the layouts that the
// PKCS#11 2.40 and 3.0 headers give them on Linux (natural alignment, no packing).
typedef unsigned long ck_ulong;

typedef struct {
	unsigned char *pIv;
	ck_ulong ulIvLen;
	ck_ulong ulIvBits;
	unsigned char *pAAD;
	ck_ulong ulAADLen;
	ck_ulong ulTagBits;
} ck_gcm_params;

typedef struct {
	ck_ulong mechanism;
	void *pParameter;
	ck_ulong ulParameterLen;
} ck_mechanism;

typedef ck_ulong (*ck_crypt_init)(ck_ulong session, ck_mechanism *mech, ck_ulong key);
typedef ck_ulong (*ck_crypt)(ck_ulong session, unsigned char *in, ck_ulong in_len,
	unsigned char *out, ck_ulong *out_len);
typedef ck_ulong (*ck_generate_random)(ck_ulong session, unsigned char *out, ck_ulong len);

typedef struct {
	ck_ulong slotID;
	ck_ulong state;
	ck_ulong flags;
	ck_ulong ulDeviceError;
} ck_session_info;

typedef ck_ulong (*ck_get_session_info)(ck_ulong session, ck_session_info *info);

// CK_FUNCTION_LIST is a CK_VERSION (two bytes) followed by one pointer per function in
// the order the standard fixes. The indexes below count from C_Initialize at 0.
typedef struct {
	unsigned char major, minor;
	void *functions[68];
} ck_function_list;

enum {
	ck_get_session_info_index = 15,
	ck_encrypt_init_index = 29,
	ck_encrypt_index = 30,
	ck_decrypt_init_index = 33,
	ck_decrypt_index = 34,
	ck_generate_random_index = 64,
};

static const ck_ulong ckm_aes_gcm = 0x1087;

typedef struct {
	ck_crypt_init encrypt_init;
	ck_crypt encrypt;
	ck_crypt_init decrypt_init;
	ck_crypt decrypt;
	ck_generate_random generate_random;
	ck_get_session_info get_session_info;
} gcm_functions;

// gcm_check_export returns 0 when the library exports no symbol name, or exports it at
// the address listed, and 1 when the two differ: the list then has another layout.
static int gcm_check_export(void *library, const char *name, void *listed) {
	void *exported = dlsym(library, name);
	return exported != NULL && exported != listed;
}

// gcm_load fills f from the function list of the library at path, which must be loaded
// already. The handle that dlopen returns is never closed, so the library, and with it
// the function pointers, stay loaded for the life of the process. It returns 0, or the
// number of the step that failed.
static int gcm_load(const char *path, gcm_functions *f) {
	void *library = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (library == NULL) {
		return 1;
	}
	ck_ulong (*get_function_list)(ck_function_list **) =
		(ck_ulong (*)(ck_function_list **))dlsym(library, "C_GetFunctionList");
	if (get_function_list == NULL) {
		return 2;
	}
	ck_function_list *list = NULL;
	if (get_function_list(&list) != 0 || list == NULL) {
		return 3;
	}
	f->encrypt_init = (ck_crypt_init)list->functions[ck_encrypt_init_index];
	f->encrypt = (ck_crypt)list->functions[ck_encrypt_index];
	f->decrypt_init = (ck_crypt_init)list->functions[ck_decrypt_init_index];
	f->decrypt = (ck_crypt)list->functions[ck_decrypt_index];
	f->generate_random = (ck_generate_random)list->functions[ck_generate_random_index];
	f->get_session_info = (ck_get_session_info)list->functions[ck_get_session_info_index];
	if (f->encrypt_init == NULL || f->encrypt == NULL || f->decrypt_init == NULL ||
		f->decrypt == NULL || f->generate_random == NULL || f->get_session_info == NULL) {
		return 4;
	}
	if (gcm_check_export(library, "C_EncryptInit", (void *)f->encrypt_init) ||
		gcm_check_export(library, "C_Encrypt", (void *)f->encrypt) ||
		gcm_check_export(library, "C_DecryptInit", (void *)f->decrypt_init) ||
		gcm_check_export(library, "C_Decrypt", (void *)f->decrypt) ||
		gcm_check_export(library, "C_GenerateRandom", (void *)f->generate_random)) {
		return 5;
	}
	return 0;
}

// gcm_session_slot returns C_GetSessionInfo's result for session and its slot in *slot.
static ck_ulong gcm_session_slot(const gcm_functions *f, ck_ulong session, ck_ulong *slot) {
	ck_session_info info = {0, 0, 0, 0};
	ck_ulong rv = f->get_session_info(session, &info);
	*slot = info.slotID;
	return rv;
}

// gcm_crypt runs C_EncryptInit and C_Encrypt (encrypt is 1) or C_DecryptInit and
// C_Decrypt (encrypt is 0) with CKM_AES_GCM in one call from Go. *init_failed is 1 when
// the init call returned the error.
static ck_ulong gcm_crypt(const gcm_functions *f, int encrypt, ck_ulong session,
	ck_ulong key, unsigned char *iv, ck_ulong iv_len, unsigned char *aad, ck_ulong aad_len,
	ck_ulong tag_bits, unsigned char *in, ck_ulong in_len, unsigned char *out,
	ck_ulong *out_len, int *init_failed) {
	ck_gcm_params params = {iv, iv_len, iv_len * 8, aad, aad_len, tag_bits};
	ck_mechanism mechanism = {ckm_aes_gcm, &params, sizeof params};

	ck_ulong rv = encrypt ? f->encrypt_init(session, &mechanism, key)
		: f->decrypt_init(session, &mechanism, key);
	*init_failed = rv != 0;
	if (rv != 0) {
		return rv;
	}
	return encrypt ? f->encrypt(session, in, in_len, out, out_len)
		: f->decrypt(session, in, in_len, out, out_len);
}

// gcm_seal fills random with C_GenerateRandom when random_len is not 0, and then
// encrypts as gcm_crypt does. random may be the plaintext, the IV or both. *stage is 0
// when C_GenerateRandom failed, 1 for C_EncryptInit and 2 for C_Encrypt.
static ck_ulong gcm_seal(const gcm_functions *f, ck_ulong session, ck_ulong key,
	unsigned char *random, ck_ulong random_len, unsigned char *iv, ck_ulong iv_len,
	unsigned char *aad, ck_ulong aad_len, ck_ulong tag_bits, unsigned char *in,
	ck_ulong in_len, unsigned char *out, ck_ulong *out_len, int *stage) {
	*stage = 0;
	if (random_len != 0) {
		ck_ulong rv = f->generate_random(session, random, random_len);
		if (rv != 0) {
			return rv;
		}
	}
	int init_failed = 0;
	ck_ulong rv = gcm_crypt(f, 1, session, key, iv, iv_len, aad, aad_len, tag_bits, in,
		in_len, out, out_len, &init_failed);
	*stage = init_failed ? 1 : 2;
	return rv;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// gcmCalls runs a whole GCM encryption or decryption, init and single-part operation,
// in one cgo call on the library's own function pointers, with the mechanism parameters
// on the C stack. Through miekg/pkcs11 the same work takes about ten cgo calls (C
// allocations for the parameters, a length query before C_Decrypt, and frees), which
// cost about 1.5 µs per operation in BenchmarkOpen on SoftHSM2.
//
// The sessions and object handles are those of the pkcs11.Ctx that loaded the same
// library. That holds for libraries with one state per process, such as SoftHSM2. It does
// not hold for proxies such as p11-kit's, whose C_GetFunctionList returns a list with a
// state of its own at every call, so loadGCMCalls checks the list on a session of the
// pkcs11.Ctx.
// gcmCalls is safe for concurrent use on distinct sessions.
type gcmCalls struct {
	functions C.gcm_functions
}

// loadGCMCalls returns the one-call GCM functions of the library at path, which p11 has
// loaded and initialised. It returns an error when the library's function list cannot
// be read, or when it does not reach the sessions of p11: a session that p11 opens on
// slot must be known to the list's C_GetSessionInfo.
func loadGCMCalls(path string, p11 *pkcs11.Ctx, slot uint) (*gcmCalls, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))

	g := &gcmCalls{}
	if step := C.gcm_load(cpath, &g.functions); step != 0 {
		return nil, fmt.Errorf("read the function list of %s: step %d of 5 failed", path, step)
	}

	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, fmt.Errorf("open a session to check the function list: %w", err)
	}
	defer func() { _ = p11.CloseSession(h) }()
	var listedSlot C.ck_ulong
	if rv := C.gcm_session_slot(&g.functions, C.ck_ulong(h), &listedSlot); rv != 0 {
		return nil, fmt.Errorf("the function list of %s does not reach the sessions of "+
			"pkcs11.Ctx: C_GetSessionInfo: %w", path, pkcs11.Error(rv))
	}
	if uint(listedSlot) != slot {
		return nil, fmt.Errorf("the function list of %s reports slot %d for a session "+
			"on slot %d", path, listedSlot, slot)
	}
	return g, nil
}

// seal fills random from C_GenerateRandom, unless it is empty, and then encrypts
// plaintext into a new slice with room for the tag, in one cgo call. A token that
// chooses the IV writes it into iv. random may share memory with plaintext and
// iv, which are read after it is filled.
func (g *gcmCalls) seal(s pkcs11.SessionHandle, key pkcs11.ObjectHandle,
	random, iv, plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, len(plaintext)+GCMTagSize)
	outLen := C.ck_ulong(len(out))
	var stage C.int
	rv := C.gcm_seal(&g.functions, C.ck_ulong(s), C.ck_ulong(key),
		bytePointer(random), C.ck_ulong(len(random)), bytePointer(iv), C.ck_ulong(len(iv)),
		bytePointer(aad), C.ck_ulong(len(aad)), gcmTagBits, bytePointer(plaintext),
		C.ck_ulong(len(plaintext)), bytePointer(out), &outLen, &stage)
	if rv == 0 {
		return out[:outLen], nil
	}

	name := [...]string{"C_GenerateRandom", "C_EncryptInit", "C_Encrypt"}[stage]
	return nil, fmt.Errorf("%s: %w", name, pkcs11.Error(rv))
}

// decrypt decrypts and authenticates ciphertext into a new slice. A C_Decrypt failure
// that means the tag did not verify returns ErrDecrypt, as decryptGCM does. Other
// failures are wrapped as decryptGCM wraps them.
func (g *gcmCalls) decrypt(s pkcs11.SessionHandle, key pkcs11.ObjectHandle,
	iv, ciphertext, aad []byte) ([]byte, error) {
	out := make([]byte, len(ciphertext))
	outLen := C.ck_ulong(len(out))
	var initFailed C.int
	rv := C.gcm_crypt(&g.functions, 0, C.ck_ulong(s), C.ck_ulong(key),
		bytePointer(iv), C.ck_ulong(len(iv)), bytePointer(aad), C.ck_ulong(len(aad)),
		gcmTagBits, bytePointer(ciphertext), C.ck_ulong(len(ciphertext)), bytePointer(out),
		&outLen, &initFailed)
	if rv == 0 {
		return out[:outLen], nil
	}

	if initFailed != 0 {
		return nil, fmt.Errorf("C_DecryptInit: %w", pkcs11.Error(rv))
	}
	err := fmt.Errorf("C_Decrypt: %w", pkcs11.Error(rv))
	if isDecryptFailure(err) {
		return nil, ErrDecrypt
	}
	return nil, err
}

// bytePointer returns the address of b's first byte. An empty b gets the address of a
// byte of its own, as miekg/pkcs11 does, because tokens may reject a NULL data pointer
// even with a zero length (SoftHSM2 returns CKR_ARGUMENTS_BAD).
func bytePointer(b []byte) *C.uchar {
	if len(b) == 0 {
		b = []byte{0}
	}
	return (*C.uchar)(unsafe.Pointer(&b[0]))
}
