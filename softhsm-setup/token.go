package softhsmsetup

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/pkcs11"
)

// InitToken initialises the first free SoftHSM2 token of the configuration confPath with
// label and both PINs, through C_InitToken and C_InitPIN so that no PIN appears in a
// command line. It sets SOFTHSM2_CONF to confPath.
//
// When the library is already initialised in this process, InitToken uses that state
// without finalising it, and other users of the library see the new token at once. That
// state was read from SOFTHSM2_CONF at its C_Initialize, so confPath must be the same file.
func InitToken(confPath, label, soPIN, userPIN string) error {
	module, err := FindModule()
	if err != nil {
		return err
	}

	if prev := os.Getenv("SOFTHSM2_CONF"); prev != "" && prev != confPath && libraryInUse(module) {
		return fmt.Errorf("init token %q: SoftHSM2 is already initialised in this process with %s, not %s",
			label, prev, confPath)
	}
	if err := os.Setenv("SOFTHSM2_CONF", confPath); err != nil {
		return fmt.Errorf("set SOFTHSM2_CONF: %w", err)
	}

	_, err = withLibrary(module, func(p11 *pkcs11.Ctx) (bool, error) {
		return true, initToken(p11, label, soPIN, userPIN)
	})
	if err != nil {
		return fmt.Errorf("init token %q: %w", label, err)
	}

	return nil
}

func initToken(p11 *pkcs11.Ctx, label, soPIN, userPIN string) error {
	if _, ok, err := findToken(p11, label); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("a token labelled %q already exists", label)
	}

	slot, err := freeSlot(p11)
	if err != nil {
		return err
	}

	if err := p11.InitToken(slot, soPIN, label); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}

	// SoftHSM2 keeps the slot id of the new token until the next C_Initialize, but look
	// it up by label in case another library renumbers at once.
	slot, ok, err := findToken(p11, label)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("token %q not found after C_InitToken", label)
	}

	return initUserPIN(p11, slot, soPIN, userPIN)
}

// initUserPIN logs in to the token in slot as the security officer with soPIN and sets
// its user PIN to userPIN (C_InitPIN).
func initUserPIN(p11 *pkcs11.Ctx, slot uint, soPIN, userPIN string) error {
	s, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("C_OpenSession: %w", err)
	}
	defer p11.CloseSession(s)

	if err := p11.Login(s, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("C_Login as SO: %w", err)
	}
	defer p11.Logout(s)

	if err := p11.InitPIN(s, userPIN); err != nil {
		return fmt.Errorf("C_InitPIN: %w", err)
	}

	return nil
}

// finishUserPIN sets the user PIN of the token labelled label if the token has none, as
// after a process that was killed between C_InitToken and C_InitPIN. It reports whether
// it set the PIN.
func finishUserPIN(p11 *pkcs11.Ctx, label, soPIN, userPIN string) (bool, error) {
	slot, ok, err := findToken(p11, label)
	if err != nil || !ok {
		return false, err
	}
	info, err := p11.GetTokenInfo(slot)
	if err != nil {
		return false, fmt.Errorf("C_GetTokenInfo: %w", err)
	}
	if info.Flags&pkcs11.CKF_USER_PIN_INITIALIZED != 0 {
		return false, nil
	}

	if err := initUserPIN(p11, slot, soPIN, userPIN); err != nil {
		return false, fmt.Errorf("token %q has no user PIN, and setting it with the SO PIN "+
			"failed, so its token file may be damaged: %w. %s", label, err, damagedAdvice)
	}
	return true, nil
}

// withLibrary loads module, initialises it unless this process already did, runs fn, and
// finalises only what it initialised.
func withLibrary(module string, fn func(*pkcs11.Ctx) (bool, error)) (bool, error) {
	p11 := pkcs11.New(module)
	if p11 == nil {
		return false, fmt.Errorf("load PKCS#11 module %q", module)
	}
	defer p11.Destroy()

	err := p11.Initialize()
	owned := err == nil
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return false, fmt.Errorf("C_Initialize: %w", err)
	}
	if owned {
		defer p11.Finalize()
	}

	return fn(p11)
}

// libraryInUse reports whether module is initialised in this process.
func libraryInUse(module string) bool {
	p11 := pkcs11.New(module)
	if p11 == nil {
		return false
	}
	defer p11.Destroy()

	if err := p11.Initialize(); err != nil {
		return errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED))
	}
	_ = p11.Finalize()

	return false
}

// findToken returns the slot of the initialised token labelled label.
func findToken(p11 *pkcs11.Ctx, label string) (uint, bool, error) {
	slots, err := p11.GetSlotList(true)
	if err != nil {
		return 0, false, fmt.Errorf("C_GetSlotList: %w", err)
	}

	for _, slot := range slots {
		info, err := p11.GetTokenInfo(slot)
		if err != nil {
			continue
		}
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && strings.TrimRight(info.Label, " ") == label {
			return slot, true, nil
		}
	}

	return 0, false, nil
}

// freeSlot returns the slot of SoftHSM2's free, uninitialised token.
func freeSlot(p11 *pkcs11.Ctx) (uint, error) {
	slots, err := p11.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("C_GetSlotList: %w", err)
	}

	for _, slot := range slots {
		info, err := p11.GetTokenInfo(slot)
		if err != nil {
			continue
		}
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			return slot, nil
		}
	}

	return 0, errors.New("no free token slot; SoftHSM2 adds one at its next C_Initialize")
}
