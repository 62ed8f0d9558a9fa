package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Messages of warnOpenFileModes.
const (
	msgOpenSecretFile = "a secret file is readable or writable by group or others"
	msgOpenDataDir    = "the data directory is writable by group or others, so another " +
		"user can replace the files in it"
)

// fileSecret is the content of every secret file that the tests write. No log may
// contain it.
const fileSecret = "secret-1234-do-not-log"

// warnings returns the WARN records of the JSON log lines in logs. Lines that are not
// JSON, such as the output of the SoftHSM2 library, are skipped.
func warnings(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var records []map[string]any
	scanner := bufio.NewScanner(strings.NewReader(logs))
	for scanner.Scan() {
		var record map[string]any
		if json.Unmarshal(scanner.Bytes(), &record) != nil {
			continue
		}
		if record["level"] == "WARN" {
			records = append(records, record)
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	return records
}

// modeWarnings returns the records of warnings whose message is msg.
func modeWarnings(t *testing.T, logs, msg string) []map[string]any {
	t.Helper()
	var records []map[string]any
	for _, record := range warnings(t, logs) {
		if record["msg"] == msg {
			records = append(records, record)
		}
	}
	return records
}

// writeSecretFile writes fileSecret to path and sets its mode to perm, which the umask
// does not change.
func writeSecretFile(t *testing.T, path string, perm fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(fileSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func TestWarnOpenFileModes(t *testing.T) {
	// fileKind is a kind of secret file, with its path for a case's data directory and
	// the case's directory of the files that flags name.
	type fileKind struct {
		kind string
		path func(dataDir, otherDir string) string
	}
	userPIN := fileKind{"user PIN of the embedded token",
		func(dataDir, _ string) string { return filepath.Join(dataDir, "user-pin") }}
	soPIN := fileKind{"SO PIN of the embedded token",
		func(dataDir, _ string) string { return filepath.Join(dataDir, "so-pin") }}
	adminCredentials := fileKind{"admin credentials",
		func(dataDir, _ string) string { return filepath.Join(dataDir, "admin-credentials.json") }}
	pinFile := fileKind{"token user PIN",
		func(_, otherDir string) string { return filepath.Join(otherDir, "pin") }}
	tlsKey := fileKind{"TLS private key",
		func(_, otherDir string) string { return filepath.Join(otherDir, "tls.key") }}

	tests := []struct {
		name     string
		file     fileKind
		fileMode fs.FileMode // 0 leaves the file missing
		dirMode  fs.FileMode
		wantFile bool // a warning about the file
		wantDir  bool // a warning about the data directory
	}{
		{name: "user-pin 0600", file: userPIN, fileMode: 0o600, dirMode: 0o700},
		{name: "user-pin 0640", file: userPIN, fileMode: 0o640, dirMode: 0o700, wantFile: true},
		{name: "user-pin 0644", file: userPIN, fileMode: 0o644, dirMode: 0o700, wantFile: true},
		{name: "user-pin 0604", file: userPIN, fileMode: 0o604, dirMode: 0o700, wantFile: true},
		{name: "user-pin 0620", file: userPIN, fileMode: 0o620, dirMode: 0o700, wantFile: true},
		{name: "user-pin 0700", file: userPIN, fileMode: 0o700, dirMode: 0o700},
		{name: "user-pin missing", file: userPIN, dirMode: 0o700},
		{name: "so-pin 0600", file: soPIN, fileMode: 0o600, dirMode: 0o700},
		{name: "so-pin 0640", file: soPIN, fileMode: 0o640, dirMode: 0o700, wantFile: true},
		{name: "so-pin 0644", file: soPIN, fileMode: 0o644, dirMode: 0o700, wantFile: true},
		{name: "so-pin 0604", file: soPIN, fileMode: 0o604, dirMode: 0o700, wantFile: true},
		{name: "so-pin missing", file: soPIN, dirMode: 0o700},
		{name: "admin credentials 0600", file: adminCredentials, fileMode: 0o600, dirMode: 0o700},
		{name: "admin credentials 0640", file: adminCredentials, fileMode: 0o640, dirMode: 0o700,
			wantFile: true},
		{name: "admin credentials 0644", file: adminCredentials, fileMode: 0o644, dirMode: 0o700,
			wantFile: true},
		{name: "admin credentials 0604", file: adminCredentials, fileMode: 0o604, dirMode: 0o700,
			wantFile: true},
		{name: "admin credentials missing", file: adminCredentials, dirMode: 0o700},
		{name: "pin-file 0600", file: pinFile, fileMode: 0o600, dirMode: 0o700},
		{name: "pin-file 0640", file: pinFile, fileMode: 0o640, dirMode: 0o700, wantFile: true},
		{name: "pin-file 0644", file: pinFile, fileMode: 0o644, dirMode: 0o700, wantFile: true},
		{name: "pin-file 0604", file: pinFile, fileMode: 0o604, dirMode: 0o700, wantFile: true},
		{name: "pin-file missing", file: pinFile, dirMode: 0o700},
		{name: "tls-key 0600", file: tlsKey, fileMode: 0o600, dirMode: 0o700},
		{name: "tls-key 0640", file: tlsKey, fileMode: 0o640, dirMode: 0o700, wantFile: true},
		{name: "tls-key 0644", file: tlsKey, fileMode: 0o644, dirMode: 0o700, wantFile: true},
		{name: "tls-key 0604", file: tlsKey, fileMode: 0o604, dirMode: 0o700, wantFile: true},
		{name: "tls-key missing", file: tlsKey, dirMode: 0o700},
		{name: "data directory 0700", file: userPIN, dirMode: 0o700},
		{name: "data directory 0750", file: userPIN, dirMode: 0o750},
		{name: "data directory 0755", file: userPIN, dirMode: 0o755},
		{name: "data directory 0770", file: userPIN, dirMode: 0o770, wantDir: true},
		{name: "data directory 0775", file: userPIN, dirMode: 0o775, wantDir: true},
		{name: "data directory 0777", file: userPIN, dirMode: 0o777, wantDir: true},
		{name: "data directory 0777 and user-pin 0644", file: userPIN, fileMode: 0o644,
			dirMode: 0o777, wantFile: true, wantDir: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dataDir := filepath.Join(root, "kms data")
			otherDir := filepath.Join(root, "kms secrets")
			for _, dir := range []string{dataDir, otherDir} {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			path := tt.file.path(dataDir, otherDir)
			if tt.fileMode != 0 {
				writeSecretFile(t, path, tt.fileMode)
			}
			if err := os.Chmod(dataDir, tt.dirMode); err != nil {
				t.Fatal(err)
			}
			cfg := config{
				DataDir: dataDir,
				PINFile: filepath.Join(otherDir, "pin"),
				TLSKey:  filepath.Join(otherDir, "tls.key"),
			}

			var logs bytes.Buffer
			warnOpenFileModes(cfg, slog.New(slog.NewJSONHandler(&logs, nil)))

			wantCount := 0
			if tt.wantFile {
				wantCount++
			}
			if tt.wantDir {
				wantCount++
			}
			if got := len(warnings(t, logs.String())); got != wantCount {
				t.Errorf("%d warnings, want %d; logs:\n%s", got, wantCount, logs.String())
			}
			if strings.Contains(logs.String(), fileSecret) {
				t.Errorf("the log contains the file's content:\n%s", logs.String())
			}
			if tt.wantFile {
				checkModeWarning(t, logs.String(), msgOpenSecretFile, path, tt.fileMode,
					"chmod 600 '"+path+"'")
				checkFileKind(t, logs.String(), tt.file.kind)
			}
			if tt.wantDir {
				checkModeWarning(t, logs.String(), msgOpenDataDir, dataDir, tt.dirMode,
					"chmod go-w '"+dataDir+"'")
			}
		})
	}
}

// checkModeWarning checks that logs contain one warning with message msg, and that it
// names path, perm in octal and the command fix.
func checkModeWarning(t *testing.T, logs, msg, path string, perm fs.FileMode, fix string) {
	t.Helper()
	records := modeWarnings(t, logs, msg)
	if len(records) != 1 {
		t.Errorf("%d warnings %q, want 1; logs:\n%s", len(records), msg, logs)
		return
	}

	record := records[0]
	if record["path"] != path {
		t.Errorf("path = %v, want %q", record["path"], path)
	}
	if want := "0" + strconv.FormatUint(uint64(perm), 8); record["mode"] != want {
		t.Errorf("mode = %v, want %q", record["mode"], want)
	}
	if record["fix"] != fix {
		t.Errorf("fix = %v, want %q", record["fix"], fix)
	}
}

// checkFileKind checks that the one warning about a secret file in logs names kind.
func checkFileKind(t *testing.T, logs, kind string) {
	t.Helper()
	records := modeWarnings(t, logs, msgOpenSecretFile)
	if len(records) == 1 && records[0]["file"] != kind {
		t.Errorf("file = %v, want %q", records[0]["file"], kind)
	}
}

func TestWarnOpenFileModesPINFileInDataDir(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dataDir, "user-pin")
	writeSecretFile(t, path, 0o644)
	cfg := config{DataDir: dataDir, PINFile: path}

	var logs bytes.Buffer
	warnOpenFileModes(cfg, slog.New(slog.NewJSONHandler(&logs, nil)))

	checkModeWarning(t, logs.String(), msgOpenSecretFile, path, 0o644,
		"chmod 600 "+shellQuote(path))
	checkFileKind(t, logs.String(), "user PIN of the embedded token")
}

// msgWritableGuardedPath is the message of warnOpenFileModes for guardedPaths.
const msgWritableGuardedPath = "a file or directory of kmsd's is writable by group or " +
	"others, so another user can change or replace what kmsd reads from it"

func TestWarnWritableGuardedPaths(t *testing.T) {
	tests := []struct {
		name     string
		path     string // relative to the data directory
		dir      bool
		perm     fs.FileMode
		wantWarn bool
	}{
		{"token folder 0700", "tokens", true, 0o700, false},
		{"token folder 0755", "tokens", true, 0o755, false},
		{"token folder 0777", "tokens", true, 0o777, true},
		{"token copies 0775", "token-copies", true, 0o775, true},
		{"replica marks 0757", "replicas", true, 0o757, true},
		{"audit chain files 0777", "kms.db-audit", true, 0o777, true},
		{"SoftHSM2 configuration 0644", "softhsm2.conf", false, 0o644, false},
		{"SoftHSM2 configuration 0666", "softhsm2.conf", false, 0o666, true},
		{"SoftHSM2 configuration 0620", "softhsm2.conf", false, 0o620, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			if err := os.Chmod(dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dataDir, tt.path)
			if tt.dir {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, []byte("directories.tokendir = x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.perm); err != nil {
				t.Fatal(err)
			}
			cfg := config{DataDir: dataDir, DatabaseURL: filepath.Join(dataDir, "kms.db")}

			var logs bytes.Buffer
			warnOpenFileModes(cfg, slog.New(slog.NewJSONHandler(&logs, nil)))

			got := modeWarnings(t, logs.String(), msgWritableGuardedPath)
			if !tt.wantWarn {
				if len(got) != 0 {
					t.Errorf("warnings %v, expected none", got)
				}
				return
			}
			checkModeWarning(t, logs.String(), msgWritableGuardedPath, path, tt.perm,
				"chmod go-w "+shellQuote(path))
		})
	}
}

func TestWarnWritablePKCS11Module(t *testing.T) {
	tests := []struct {
		name     string
		perm     fs.FileMode
		wantWarn bool
	}{
		{"owner only", 0o755, false},
		{"group writable", 0o775, true},
		{"world writable", 0o757, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			if err := os.Chmod(dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			module := filepath.Join(t.TempDir(), "libvendor-pkcs11.so")
			if err := os.WriteFile(module, []byte("not a library"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(module, tt.perm); err != nil {
				t.Fatal(err)
			}
			cfg := config{DataDir: dataDir, DatabaseURL: filepath.Join(dataDir, "kms.db"),
				PKCS11Module: module}

			var logs bytes.Buffer
			warnOpenFileModes(cfg, slog.New(slog.NewJSONHandler(&logs, nil)))

			if !tt.wantWarn {
				if got := modeWarnings(t, logs.String(), msgWritableGuardedPath); len(got) != 0 {
					t.Errorf("warnings %v, expected none", got)
				}
				return
			}
			checkModeWarning(t, logs.String(), msgWritableGuardedPath, module, tt.perm,
				"chmod go-w "+shellQuote(module))
		})
	}
}

func TestWarnWritableGuardedPathsMissing(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := config{DataDir: dataDir, DatabaseURL: filepath.Join(dataDir, "kms.db")}

	var logs bytes.Buffer
	warnOpenFileModes(cfg, slog.New(slog.NewJSONHandler(&logs, nil)))

	if got := warnings(t, logs.String()); len(got) != 0 {
		t.Errorf("warnings %v for a data directory without files, expected none", got)
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "plain path", in: "/var/lib/kms-data/user-pin", want: "/var/lib/kms-data/user-pin"},
		{name: "space", in: "/tmp/kms data", want: "'/tmp/kms data'"},
		{name: "single quote", in: "/tmp/it's", want: `'/tmp/it'\''s'`},
		{name: "dollar sign", in: "/tmp/$HOME", want: "'/tmp/$HOME'"},
		{name: "empty", in: "", want: "''"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shellQuote(tt.in); got != tt.want {
				t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// TestKmsdWarnsAboutOpenFileModes starts kmsd, stops it, opens two of the files that it
// wrote to group and others, and checks the warnings of the next start.
func TestKmsdWarnsAboutOpenFileModes(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "kms-data")
	p := startKmsd(t, dataDir, "KMS_LOG_FORMAT=json")
	p.stop(t)
	if records := modeWarnings(t, p.logs.String(), msgOpenSecretFile); len(records) != 0 {
		t.Errorf("first start: %d warnings about secret files, want 0: %v",
			len(records), records)
	}

	userPIN := filepath.Join(dataDir, "user-pin")
	adminCredentials := filepath.Join(dataDir, "admin-credentials.json")
	if err := os.Chmod(userPIN, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(adminCredentials, 0o640); err != nil {
		t.Fatal(err)
	}
	p = startKmsd(t, dataDir, "KMS_LOG_FORMAT=json")
	p.stop(t)
	logs := p.logs.String()

	records := modeWarnings(t, logs, msgOpenSecretFile)
	if len(records) != 2 {
		t.Fatalf("%d warnings about secret files, want 2; logs:\n%s", len(records), logs)
	}
	wants := []struct {
		kind string
		path string
		mode string
	}{
		{kind: "user PIN of the embedded token", path: userPIN, mode: "0644"},
		{kind: "admin credentials", path: adminCredentials, mode: "0640"},
	}
	for i, want := range wants {
		record := records[i]
		if record["file"] != want.kind {
			t.Errorf("warning %d: file = %v, want %q", i, record["file"], want.kind)
		}
		if record["path"] != want.path {
			t.Errorf("warning %d: path = %v, want %q", i, record["path"], want.path)
		}
		if record["mode"] != want.mode {
			t.Errorf("warning %d: mode = %v, want %q", i, record["mode"], want.mode)
		}
		if fix := "chmod 600 " + shellQuote(want.path); record["fix"] != fix {
			t.Errorf("warning %d: fix = %v, want %q", i, record["fix"], fix)
		}
	}
	if dirRecords := modeWarnings(t, logs, msgOpenDataDir); len(dirRecords) != 0 {
		t.Errorf("%d warnings about the data directory, want 0: %v", len(dirRecords), dirRecords)
	}

	pin, err := os.ReadFile(userPIN)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs, strings.TrimSpace(string(pin))) {
		t.Error("the log contains the user PIN")
	}
}
