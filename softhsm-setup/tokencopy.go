package softhsmsetup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SoftHSM2 2.6.1 rewrites a token's token.object in place at every C_Login: it truncates
// the file to 0 bytes and then writes it again (ftruncate and write, seen with strace on
// Debian 12's softhsm2 package). A process killed between the two, or a power loss
// before the file reaches the disk, leaves the file empty or cut short. The file holds
// the token's PINs and the key that encrypts every key object, so such a token loses all
// its keys.
//
// Ensure therefore puts back a copy of each token's token.object, kept in
// dataDir/token-copies, when it finds the token file shorter than the copy. Ensure
// writes the copy of a token it creates, and SaveTokenFiles refreshes it, atomically,
// after kmsd logs in with the user PIN at each start (cmd/kmsd). Logins rewrite the
// file with the same length once the user PIN is set, so a shorter file is a cut-short
// one. Restoring the copy loses only flag changes since it was taken, such as the count
// of failed logins.
//
// NOTE: a PIN changed with SoftHSM2's own tools is assumed to keep the file's length;
// kmsd itself never changes a PIN.

// tokenCopiesDir, in the data directory, holds the copy of each token's token.object,
// named after the token's folder under the token directory.
const tokenCopiesDir = "token-copies"

// restoreTokenFiles puts back the copy of each token.object under dataDir/tokens that is
// shorter than its copy, and returns the paths of the files it restored.
func restoreTokenFiles(dataDir string) ([]string, error) {
	folders, err := tokenFolders(dataDir)
	if err != nil {
		return nil, err
	}

	var restored []string
	for _, folder := range folders {
		saved, err := os.ReadFile(filepath.Join(dataDir, tokenCopiesDir, folder))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return restored, fmt.Errorf("read the copy of token %s: %w", folder, err)
		}

		path := filepath.Join(dataDir, "tokens", folder, "token.object")
		current, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return restored, fmt.Errorf("read %s: %w", path, err)
		}
		if len(current) >= len(saved) {
			continue
		}

		if err := writeFileAtomic(path, saved); err != nil {
			return restored, fmt.Errorf("restore %s from its copy: %w", path, err)
		}
		restored = append(restored, path)
	}
	return restored, nil
}

// SaveTokenFiles copies each token.object under dataDir/tokens to dataDir/token-copies,
// unless the file is shorter than the copy there, which Ensure would have put back, or
// the copy is the same already. Call it once the token has logged in with the user PIN,
// so that the file it copies is known to be sound: a file that lets SoftHSM2 find the
// token may still be damaged past its label.
func SaveTokenFiles(dataDir string) error {
	folders, err := tokenFolders(dataDir)
	if err != nil {
		return err
	}

	copies := filepath.Join(dataDir, tokenCopiesDir)
	if err := os.MkdirAll(copies, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", copies, err)
	}
	for _, folder := range folders {
		path := filepath.Join(dataDir, "tokens", folder, "token.object")
		current, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) || len(current) == 0 {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}

		copyPath := filepath.Join(copies, folder)
		saved, err := os.ReadFile(copyPath)
		if err == nil && (len(current) < len(saved) || bytes.Equal(current, saved)) {
			continue
		}
		if err := writeFileAtomic(copyPath, current); err != nil {
			return fmt.Errorf("write the copy of %s: %w", path, err)
		}
	}
	return nil
}

// tokenFolders returns the names of the token folders under dataDir/tokens.
func tokenFolders(dataDir string) ([]string, error) {
	tokens := filepath.Join(dataDir, "tokens")
	entries, err := os.ReadDir(tokens)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", tokens, err)
	}

	var folders []string
	for _, e := range entries {
		if e.IsDir() {
			folders = append(folders, e.Name())
		}
	}
	return folders, nil
}
