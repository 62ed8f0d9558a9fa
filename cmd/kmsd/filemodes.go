package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hsmkms/kms/service/auth"
)

// secretFile is a file that kmsd reads secrets from, with the name that its mode warning
// gives it, for example "TLS private key".
type secretFile struct {
	kind string
	path string
}

// secretFiles returns the secret files that cfg makes kmsd read: the PIN files of the
// embedded token and the admin credentials file in the data directory, the PIN file of
// --pin-file and the TLS private key of --tls-key. Each path appears once, so a PIN file
// that is the data directory's user-pin is listed as the embedded token's user PIN.
func secretFiles(cfg config) []secretFile {
	files := []secretFile{
		{kind: "user PIN of the embedded token", path: filepath.Join(cfg.DataDir, "user-pin")},
		{kind: "SO PIN of the embedded token", path: filepath.Join(cfg.DataDir, "so-pin")},
		{kind: "admin credentials", path: filepath.Join(cfg.DataDir, auth.AdminCredentialsFile)},
	}
	if cfg.PINFile != "" {
		files = append(files, secretFile{kind: "token user PIN", path: cfg.PINFile})
	}
	if cfg.TLSKey != "" {
		files = append(files, secretFile{kind: "TLS private key", path: cfg.TLSKey})
	}

	seen := make(map[string]bool, len(files))
	unique := files[:0]
	for _, f := range files {
		key := absolutePath(f.path)
		if !seen[key] {
			seen[key] = true
			unique = append(unique, f)
		}
	}
	return unique
}

// warnOpenFileModes logs one warning for each file of secretFiles(cfg) that group or
// others may read or write. It logs one for the data directory and each of
// guardedPaths(cfg) that group or others may write, because another user could then
// replace what is in it. Each warning names the path,
// the mode and the chmod command that fixes it. A file that does not exist is skipped,
// because kmsd creates the files of the data directory with mode 0600 and reports a
// missing PIN file or TLS key when it reads them. It only logs, because container
// platforms such as Kubernetes mount secrets with mode 0644 by default. It never reads
// the files.
func warnOpenFileModes(cfg config, log *slog.Logger) {
	dir := absolutePath(cfg.DataDir)
	if perm, ok := statPerm(dir, log); ok && perm&0o022 != 0 {
		log.Warn("the data directory is writable by group or others, so another user can "+
			"replace the files in it", "path", dir, "mode", fmt.Sprintf("%#o", perm),
			"fix", "chmod go-w "+shellQuote(dir))
	}

	for _, path := range guardedPaths(cfg) {
		path = absolutePath(path)
		if perm, ok := statPerm(path, log); ok && perm&0o022 != 0 {
			log.Warn("a file or directory of kmsd's is writable by group or others, so "+
				"another user can change or replace what kmsd reads from it", "path", path,
				"mode", fmt.Sprintf("%#o", perm), "fix", "chmod go-w "+shellQuote(path))
		}
	}

	for _, f := range secretFiles(cfg) {
		path := absolutePath(f.path)
		perm, ok := statPerm(path, log)
		if !ok || perm&0o066 == 0 {
			continue
		}
		log.Warn("a secret file is readable or writable by group or others",
			"file", f.kind, "path", path, "mode", fmt.Sprintf("%#o", perm),
			"fix", "chmod 600 "+shellQuote(path))
	}
}

// guardedPaths returns the files and directories that hold no secret but that no other
// user may write. They are the embedded token's folder and its copies, SoftHSM2's
// configuration (which names the token folder), the replica marks, the audit chain files
// of the default SQLite store, and the PKCS#11 library of --pkcs11-module. Another user
// who can write them can replace the token, point SoftHSM2 at another one, cut the audit
// trail, or run code inside kmsd.
//
// NOTE: the chain files of a SQLite store given as a URL (file:, sqlite:) or outside the
// data directory are not checked here.
func guardedPaths(cfg config) []string {
	paths := []string{
		filepath.Join(cfg.DataDir, "tokens"),
		filepath.Join(cfg.DataDir, "token-copies"),
		filepath.Join(cfg.DataDir, "softhsm2.conf"),
		filepath.Join(cfg.DataDir, "replicas"),
	}
	if filepath.Clean(cfg.DatabaseURL) == filepath.Join(cfg.DataDir, "kms.db") {
		paths = append(paths, filepath.Join(cfg.DataDir, "kms.db-audit"))
	}
	if cfg.PKCS11Module != "" {
		paths = append(paths, cfg.PKCS11Module)
	}
	return paths
}

// statPerm returns the permission bits of the file at path, following symbolic links as
// the reads of the file do. It returns false when the file does not exist, and logs
// other failures, which leave the mode unknown, as warnings.
func statPerm(path string, log *slog.Logger) (fs.FileMode, bool) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false
	}
	if err != nil {
		log.Warn("checking the mode of a file failed", "path", path, "error", err)
		return 0, false
	}
	return info.Mode().Perm(), true
}

// shellSafe matches the strings that a POSIX shell reads as one word without quotes.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./+:@%,=-]+$`)

// shellQuote returns s as one word of a POSIX shell command, in single quotes unless it
// needs none, so that a logged command can be pasted into a shell as it is.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
