package softhsmsetup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
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

// copyHeader starts each copy file, followed by the SHA-256 of the token file in hex, a
// newline and the token file itself. A copy whose content does not match the digest was
// damaged or replaced, and is never put back.
const copyHeader = "kmsd token file copy sha256="

// encodeCopy returns the copy file of the token file content.
func encodeCopy(content []byte) []byte {
	sum := sha256.Sum256(content)
	out := append([]byte(copyHeader), hex.EncodeToString(sum[:])...)
	out = append(out, '\n')
	return append(out, content...)
}

// readCopy returns the token file that the copy file at path holds. ok is false when
// path is not a regular file or its content does not match its digest.
func readCopy(path string) (content []byte, ok bool, err error) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, false, err
	}
	if !info.Mode().IsRegular() {
		return nil, false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}

	header, content, found := bytes.Cut(b, []byte{'\n'})
	digest, hasHeader := bytes.CutPrefix(header, []byte(copyHeader))
	if !found || !hasHeader {
		return nil, false, nil
	}
	sum := sha256.Sum256(content)
	if !bytes.Equal(digest, []byte(hex.EncodeToString(sum[:]))) {
		return nil, false, nil
	}
	return content, true, nil
}

// restoreTokenFiles puts back the copy of each token.object under dataDir/tokens that is
// shorter than its copy, and returns the paths of the files it restored. A copy that does
// not match its digest is not used.
func restoreTokenFiles(dataDir string) ([]string, error) {
	folders, err := tokenFolders(dataDir)
	if err != nil {
		return nil, err
	}

	var restored []string
	for _, folder := range folders {
		saved, ok, err := readCopy(filepath.Join(dataDir, tokenCopiesDir, folder))
		if errors.Is(err, os.ErrNotExist) || (err == nil && !ok) {
			continue
		}
		if err != nil {
			return restored, fmt.Errorf("read the copy of token %s: %w", folder, err)
		}

		path := filepath.Join(dataDir, "tokens", folder, "token.object")
		current, err := readSettled(path, len(saved))
		if err != nil {
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
// unless the copy there is the same already, or is sound and longer, as when the file was
// read while SoftHSM2 rewrote it. Call it once the token has logged in with the user PIN,
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
		saved, ok, err := readCopy(copyPath)
		if err == nil && ok && (len(current) < len(saved) || bytes.Equal(current, saved)) {
			continue
		}
		if err == nil && !ok {
			// writeFileAtomic would keep a symbolic link whose target has the same content.
			if err := os.Remove(copyPath); err != nil {
				return fmt.Errorf("remove the damaged copy of %s: %w", path, err)
			}
		}
		if err := writeFileAtomic(copyPath, encodeCopy(current)); err != nil {
			return fmt.Errorf("write the copy of %s: %w", path, err)
		}
	}
	return nil
}

// copyAdvice returns advice for each token file under dataDir/tokens that differs from
// its sound copy, which a damaged file of the right length or longer does, or "".
func copyAdvice(dataDir string) string {
	folders, err := tokenFolders(dataDir)
	if err != nil {
		return ""
	}

	var advice strings.Builder
	for _, folder := range folders {
		copyPath := filepath.Join(dataDir, tokenCopiesDir, folder)
		saved, ok, err := readCopy(copyPath)
		if err != nil || !ok {
			continue
		}
		path := filepath.Join(dataDir, "tokens", folder, "token.object")
		if current, err := os.ReadFile(path); err == nil && bytes.Equal(current, saved) {
			continue
		}
		fmt.Fprintf(&advice, ". %s differs from the copy that kmsd kept at the last start "+
			"that logged in. If the file is damaged, stop kmsd, move the file away and put "+
			"the copy in its place without its first line: tail -n +2 %s > %s", path,
			copyPath, path)
	}
	return advice.String()
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

// Bounds of readSettled. SoftHSM2 2.6.1 rewrites token.object at every login: it
// truncates the file, releases its lock on it and then writes it again. So another
// process that shares the token directory, such as a replica that starts or reconnects
// at the same moment, can find the file empty or short for a moment.
const (
	rewriteWait = time.Second
	rewritePoll = 20 * time.Millisecond
)

// readSettled reads the file at path, and reads it again every rewritePoll for up to
// rewriteWait while it is shorter than minLen, so that a file in the middle of SoftHSM2's
// rewrite is not taken for a damaged one. A missing file reads as empty.
func readSettled(path string, minLen int) ([]byte, error) {
	deadline := time.Now().Add(rewriteWait)
	for {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if len(b) >= minLen || time.Now().After(deadline) {
			return b, nil
		}
		time.Sleep(rewritePoll)
	}
}
