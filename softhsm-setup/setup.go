// Package softhsmsetup prepares SoftHSM2 tokens: the embedded default of kmsd keeps a token
// directory, its configuration and generated PINs under one data directory.
//
// SoftHSM2 2.6.1 reads SOFTHSM2_CONF and scans its token directory at C_Initialize only, and
// it keeps one state per process. A token that InitToken initialises in the same process is
// visible at once, but a token that another process initialises is not, until the library
// is finalised and initialised again. So initialise tokens before hsm.Open, or let the
// hsm.Module reconnect, which finalises and rescans when no other user of the library in the
// process keeps it open.
package softhsmsetup

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/miekg/pkcs11"
)

// ModulePaths lists where Debian and Ubuntu packages install libsofthsm2.so, in the order
// FindModule tries them.
var ModulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
}

// Setup names what Ensure or InitToken prepared.
type Setup struct {
	ModulePath string // the SoftHSM2 PKCS#11 library
	ConfPath   string // the softhsm2.conf that SOFTHSM2_CONF points at
	TokenLabel string
	PINFile    string // file holding the user PIN, mode 0600
	// RestoredFiles are the token files that Ensure found cut short and put back from
	// their copies (tokencopy.go).
	RestoredFiles []string
	// RemovedStaging is the staging token directory that a first start killed before it
	// finished left behind, which Ensure removed, or "". It held no live token.
	RemovedStaging string
}

// UserPIN reads the user PIN from s.PINFile.
func (s Setup) UserPIN() (string, error) {
	b, err := os.ReadFile(s.PINFile)
	if err != nil {
		return "", fmt.Errorf("read user PIN: %w", err)
	}

	return strings.TrimSpace(string(b)), nil
}

// FindModule returns the first path of ModulePaths that exists.
func FindModule() (string, error) {
	for _, p := range ModulePaths {
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			return p, nil
		}
	}

	return "", fmt.Errorf("libsofthsm2.so not found in %s: install SoftHSM2 (apt-get install softhsm2)",
		strings.Join(ModulePaths, ", "))
}

// ErrTokenMissing is returned by Ensure for a token that the data directory held before
// and no longer holds, for example after its token directory was deleted.
var ErrTokenMissing = errors.New("the token of this data directory is missing")

// knownTokensFile, in the data directory, is a JSON array of the labels of the tokens that
// Ensure initialised or found there. Ensure initialises a token only when its label is not
// listed, so that a lost token is reported instead of replaced by an empty one that holds
// none of the keys the store names.
const knownTokensFile = "known-tokens.json"

// pinLength is the byte count behind each generated PIN, which base64 encodes as 24 characters.
const pinLength = 18

// Ensure prepares dataDir for the embedded token labelled label, and reuses what an earlier
// call prepared:
//
//   - dataDir (mode 0700) with softhsm2.conf and the token directory dataDir/tokens,
//   - random SO and user PINs in dataDir/so-pin and dataDir/user-pin (mode 0600), written
//     before the token is initialised so that a crash cannot lose them,
//   - the token itself, initialised in-process through PKCS#11 because softhsm2-util takes
//     PINs only as arguments (visible in ps) or from a terminal,
//   - dataDir/known-tokens.json, which lists label once the token exists,
//   - dataDir/token-copies, with a copy of the token's token.object, written when Ensure
//     creates the token and refreshed by SaveTokenFiles, which Ensure puts back when it
//     finds the file cut short (tokencopy.go).
//
// A token that known-tokens.json lists but the token directory does not hold is not
// initialised again: Ensure returns an error that wraps ErrTokenMissing. A token without
// a user PIN, left by a process killed during its initialisation, gets its user PIN.
//
// Ensure holds an exclusive flock on dataDir/setup.lock (mode 0600) while it runs, so
// that Ensure calls of several processes on one data directory, such as replicas started
// at one moment, run one after the other. It waits for that lock without a time limit.
//
// Ensure sets SOFTHSM2_CONF in the process environment. Call it before hsm.Open.
func Ensure(dataDir, label string) (_ Setup, err error) {
	unlock, err := lockSetup(dataDir)
	if err != nil {
		return Setup{}, err
	}
	defer unlock()

	// A failure after a restore still reports the restore, which changed the data
	// directory.
	var restored []string
	defer func() {
		if err != nil && len(restored) > 0 {
			err = fmt.Errorf("%w (this start first restored %s from its copy in %s)", err,
				strings.Join(restored, ", "), tokenCopiesDir)
		}
	}()

	module, err := FindModule()
	if err != nil {
		return Setup{}, err
	}

	conf, createdTokens, err := writeConf(dataDir)
	if err != nil {
		return Setup{}, err
	}

	soPIN, err := ensurePIN(filepath.Join(dataDir, "so-pin"))
	if err != nil {
		return Setup{}, err
	}
	userPIN, err := ensurePIN(filepath.Join(dataDir, "user-pin"))
	if err != nil {
		return Setup{}, err
	}

	setup := Setup{
		ModulePath: module,
		ConfPath:   conf,
		TokenLabel: label,
		PINFile:    filepath.Join(dataDir, "user-pin"),
	}

	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return Setup{}, fmt.Errorf("set SOFTHSM2_CONF: %w", err)
	}

	// A staging token directory left by a first start that was killed holds no live
	// token: it was never moved into place, or its token folder was moved already.
	staging := filepath.Join(dataDir, stagingTokensDir)
	if _, err := os.Lstat(staging); err == nil {
		setup.RemovedStaging = staging
	}
	if err := removeStaging(dataDir); err != nil {
		return Setup{}, err
	}
	restored, err = restoreTokenFiles(dataDir)
	if err != nil {
		return Setup{}, err
	}
	setup.RestoredFiles = restored

	tokens := filepath.Join(dataDir, "tokens")
	found, err := findTokenSettled(module, label, tokens)
	if err != nil {
		// SoftHSM2 reports a token directory that it cannot read as CKR_GENERAL_ERROR.
		return Setup{}, fmt.Errorf("%w (check that this user can read and write %s)", err,
			tokens)
	}
	if found {
		// The so-pin and user-pin files are written before C_InitToken, so a start that
		// was killed before C_InitPIN left both PINs to finish with.
		_, err := withLibrary(module, func(p11 *pkcs11.Ctx) (bool, error) {
			return finishUserPIN(p11, label, soPIN, userPIN)
		})
		if err != nil {
			return Setup{}, err
		}
		if err := recordKnownToken(dataDir, label); err != nil {
			return Setup{}, err
		}
		return setup, nil
	}

	known, err := knownTokens(dataDir)
	if err != nil {
		return Setup{}, err
	}
	if slices.Contains(known, label) {
		if entries, err := os.ReadDir(tokens); err == nil && len(entries) > 0 {
			if damaged := damagedTokenFile(tokens); damaged != "" {
				return Setup{}, fmt.Errorf("%w: SoftHSM2 finds no token %q in %s, and %s "+
					"is empty, as SoftHSM2 leaves it when it is killed while writing it. "+
					"%s", ErrTokenMissing, label, tokens, damaged, damagedAdvice)
			}
			return Setup{}, fmt.Errorf("%w: SoftHSM2 finds no token %q in %s, which is not "+
				"empty. Check that this user can read the files there, or restore the "+
				"directory from a backup%s", ErrTokenMissing, label, tokens,
				copyAdvice(dataDir))
		}
		if createdTokens {
			// Left in place, the empty directory would take in a backup moved back to
			// its path (mv BACKUP tokens) instead of letting it take the name.
			_ = os.Remove(tokens)
		}
		return Setup{}, fmt.Errorf("%w: token %q was initialised in %s before and is not "+
			"there now. Restore that directory from a backup, because a new token would hold "+
			"none of the keys that the store names. To start over instead, move %s away",
			ErrTokenMissing, label, tokens, dataDir)
	}

	if libraryInUse(module) {
		// Another user of the library in this process, such as a test, keeps its state,
		// which was read from SOFTHSM2_CONF at C_Initialize, so the token is made in place.
		err = InitToken(conf, label, soPIN, userPIN)
	} else {
		err = initTokenStaged(dataDir, conf, label, soPIN, userPIN)
	}
	if err != nil {
		return Setup{}, withSpaceHint(err, dataDir)
	}
	if err := recordKnownToken(dataDir, label); err != nil {
		return Setup{}, err
	}
	if err := SaveTokenFiles(dataDir); err != nil {
		return Setup{}, err
	}

	return setup, nil
}

// Names, in the data directory, of the staging token directory and its configuration,
// where initTokenStaged makes a new token before it moves the token into place.
const (
	stagingTokensDir = "tokens.init"
	stagingConfFile  = "softhsm2-init.conf"
)

// initTokenStaged initialises the token labelled label in a staging token directory and
// then moves its folder into dataDir/tokens with one rename. SoftHSM2 2.6.1 writes
// token.object in place at C_InitToken and again at C_InitPIN, so a process killed
// meanwhile would otherwise leave a token file that is empty or cut short where the next
// start looks for the token. It sets SOFTHSM2_CONF to conf again before it returns.
func initTokenStaged(dataDir, conf, label, soPIN, userPIN string) error {
	staging := filepath.Join(dataDir, stagingTokensDir)
	stagingConf := filepath.Join(dataDir, stagingConfFile)
	defer os.Setenv("SOFTHSM2_CONF", conf)
	if err := removeStaging(dataDir); err != nil {
		return err
	}
	if err := os.Mkdir(staging, 0o700); err != nil {
		return fmt.Errorf("create the staging token directory: %w", err)
	}
	defer removeStaging(dataDir)
	if err := writeFileAtomic(stagingConf, []byte(confText(staging))); err != nil {
		return fmt.Errorf("write %s: %w", stagingConf, err)
	}

	if err := InitToken(stagingConf, label, soPIN, userPIN); err != nil {
		return err
	}

	folders, err := os.ReadDir(staging)
	if err != nil {
		return fmt.Errorf("read the staging token directory: %w", err)
	}
	if len(folders) != 1 || !folders[0].IsDir() {
		return fmt.Errorf("the staging token directory %s contains %d entries after "+
			"C_InitToken, expected one token folder", staging, len(folders))
	}
	folder := folders[0].Name()
	if err := syncFolder(filepath.Join(staging, folder)); err != nil {
		return fmt.Errorf("flush the new token to disk: %w", err)
	}

	tokens := filepath.Join(dataDir, "tokens")
	if err := os.Rename(filepath.Join(staging, folder), filepath.Join(tokens, folder)); err != nil {
		return fmt.Errorf("move the new token into %s: %w", tokens, err)
	}
	if err := syncFolder(tokens); err != nil {
		return fmt.Errorf("flush %s to disk: %w", tokens, err)
	}
	return nil
}

// removeStaging removes the staging token directory and its configuration.
func removeStaging(dataDir string) error {
	if err := os.RemoveAll(filepath.Join(dataDir, stagingTokensDir)); err != nil {
		return fmt.Errorf("remove the staging token directory: %w", err)
	}
	err := os.Remove(filepath.Join(dataDir, stagingConfFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the staging token configuration: %w", err)
	}
	return nil
}

// syncFolder flushes the files directly in dir, and dir itself, to disk.
func syncFolder(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := syncPath(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return syncPath(dir)
}

// syncPath flushes the file or directory at path to disk.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// damagedAdvice is the advice for a token file that a killed SoftHSM2 left damaged.
const damagedAdvice = "Restore the data directory from a backup. If no key was ever " +
	"created in it, because its first start was interrupted, move it away and start again"

// hasTokenFile reports whether a token folder in tokens holds a token file.
func hasTokenFile(tokens string) bool {
	files, _ := filepath.Glob(filepath.Join(tokens, "*", "token.object"))
	return len(files) > 0
}

// damagedTokenFile returns the path of an empty token.object file in a token folder
// under tokens, or "" when there is none.
//
// NOTE: SoftHSM2 2.6.1 rewrites token.object and object files in place, so a kill while
// it writes one can leave it empty or cut short. Ensure restores a cut-short token.object
// from its copy (tokencopy.go), so this check only matters in a data directory without
// copies. There only an empty file is recognised, and a cut-short token file shows as a
// token whose SO PIN no longer logs in. A key object cut short at its creation shows as
// a key that the token rejects. Only the credential sealing key is then replaced, while
// no credential is stored (auth.Credentials.seal).
func damagedTokenFile(tokens string) string {
	files, _ := filepath.Glob(filepath.Join(tokens, "*", "token.object"))
	for _, f := range files {
		if info, err := os.Stat(f); err == nil && info.Size() == 0 {
			return f
		}
	}
	return ""
}

// knownTokens returns the labels that dataDir/known-tokens.json lists, or none when the
// file does not exist.
func knownTokens(dataDir string) ([]string, error) {
	path := filepath.Join(dataDir, knownTokensFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}

	var labels []string
	if err := json.Unmarshal(b, &labels); err != nil {
		return nil, fmt.Errorf("%s is not a JSON array of token labels, such as [\"kms\"]: "+
			"correct it, or delete it if the token directory is intact: %w", path, err)
	}
	return labels, nil
}

// recordKnownToken adds label to dataDir/known-tokens.json unless it is listed already.
func recordKnownToken(dataDir, label string) error {
	labels, err := knownTokens(dataDir)
	if err != nil {
		return err
	}
	if slices.Contains(labels, label) {
		return nil
	}

	b, err := json.Marshal(append(labels, label))
	if err != nil {
		return fmt.Errorf("encode the known token labels: %w", err)
	}
	path := filepath.Join(dataDir, knownTokensFile)
	if err := writeFileAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeConf creates dataDir and its token directory and writes softhsm2.conf, returning its
// path.
func writeConf(dataDir string) (conf string, createdTokens bool, err error) {
	tokens := filepath.Join(dataDir, "tokens")
	if _, err := os.Stat(tokens); errors.Is(err, os.ErrNotExist) {
		createdTokens = true
	}
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", false, fmt.Errorf("create token directory: %w", err)
	}

	conf = filepath.Join(dataDir, "softhsm2.conf")
	if err := writeFileAtomic(conf, []byte(confText(tokens))); err != nil {
		return "", false, fmt.Errorf("write %s: %w", conf, err)
	}

	return conf, createdTokens, nil
}

// confText returns the SoftHSM2 configuration of a file-backed token directory tokens.
func confText(tokens string) string {
	return "directories.tokendir = " + tokens + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n"
}

// ensurePIN returns the PIN stored in path, generating and storing one when path is
// missing.
func ensurePIN(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		pin := strings.TrimSpace(string(b))
		if pin == "" {
			return "", fmt.Errorf("PIN file %s is empty", path)
		}
		return pin, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read PIN file: %w", err)
	}

	pin, err := NewPIN()
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, []byte(pin+"\n")); err != nil {
		return "", fmt.Errorf("write PIN file %s: %w", path, err)
	}

	return pin, nil
}

// NewPIN returns a random 24-character PIN.
func NewPIN() (string, error) {
	b := make([]byte, pinLength)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate PIN: %w", err)
	}

	return base64.RawURLEncoding.EncodeToString(b), nil
}

// writeFileAtomic writes data to a temporary file with mode 0600 and renames it to path.
// A path that holds data already, with mode 0600, is left as it is, so that a start on a
// full volume does not fail on files it would not change.
func writeFileAtomic(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if info, err := os.Stat(path); err == nil && info.Mode().Perm() == 0o600 {
			return nil
		}
	}

	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())

	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}

	return os.Rename(f.Name(), path)
}

// findTokenSettled reports whether SoftHSM2 finds the token labelled label. While it does
// not and the token directory holds a token file, it looks again every rewritePoll for
// up to rewriteWait, because another process's login may be rewriting that file (see
// readSettled). A scan that met the file empty or cut short misses the token, and the
// file may be whole again by the time it is checked here.
func findTokenSettled(module, label, tokens string) (bool, error) {
	deadline := time.Now().Add(rewriteWait)
	for {
		found, err := withLibrary(module, func(p11 *pkcs11.Ctx) (bool, error) {
			_, ok, err := findToken(p11, label)
			return ok, err
		})
		if err != nil || found || !hasTokenFile(tokens) || time.Now().After(deadline) {
			return found, err
		}
		time.Sleep(rewritePoll)
	}
}
