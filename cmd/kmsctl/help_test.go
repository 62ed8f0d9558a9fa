package main

import (
	"bytes"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// noCredentials is the environment of a kmsctl without credentials and without a kmsd.
func noCredentials(t *testing.T) func(string) string {
	missing := filepath.Join(t.TempDir(), "admin-credentials.json")
	return func(name string) string {
		return map[string]string{
			"KMS_CREDENTIALS_FILE": missing,
			"KMS_ENDPOINT":         "http://127.0.0.1:1", // nothing listens on port 1
		}[name]
	}
}

// runKmsctl runs kmsctl with args and returns its exit code, stdout and stderr.
func runKmsctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, noCredentials(t), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestHelpOfEveryCommand(t *testing.T) {
	var invocations [][]string
	for name := range commands {
		switch name {
		case "credentials":
			for _, sub := range []string{"create", "list", "disable", "enable", "delete"} {
				invocations = append(invocations, []string{name, sub})
			}
		case "audit":
			for _, sub := range []string{"export", "verify", "public-key", "tail"} {
				invocations = append(invocations, []string{name, sub})
			}
		}
		invocations = append(invocations, []string{name})
	}
	sort.Slice(invocations, func(i, j int) bool {
		return strings.Join(invocations[i], " ") < strings.Join(invocations[j], " ")
	})

	for _, invocation := range invocations {
		for _, helpFlag := range []string{"-h", "--help"} {
			args := append(append([]string{}, invocation...), helpFlag)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, stdout, stderr := runKmsctl(t, args...)
				if code != 0 {
					t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr)
				}
				if want := "usage: kmsctl " + invocation[0]; !strings.HasPrefix(stdout, want) {
					t.Errorf("stdout does not start with %q:\n%s", want, stdout)
				}
				if stderr != "" {
					t.Errorf("stderr is not empty:\n%s", stderr)
				}
			})
		}
	}
}

func TestHelpListsCommandFlags(t *testing.T) {
	tests := []struct {
		args      []string
		wantFlags []string
	}{
		{[]string{"credentials", "create", "--help"}, []string{"-role", "-project", "-domain", "-user"}},
		{[]string{"create-key", "--help"}, []string{"-alias", "-description"}},
		{[]string{"create-datakey", "KEY", "--help"}, []string{"-bits", "-no-plaintext", "-context", "-aad"}},
		{[]string{"create-grant", "-h"}, []string{"-grantee", "-operations", "-type", "-name", "-retiring"}},
		{[]string{"audit", "verify", "--help"},
			[]string{"-in", "-database", "-public-key", "-require-signed-tail"}},
		{[]string{"find-keys", "--help"}, []string{"-tag", "-name", "-limit", "-offset", "-count"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, _ := runKmsctl(t, tt.args...)
			if code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			for _, flag := range tt.wantFlags {
				if !strings.Contains(stdout, "\n  "+flag+" ") && !strings.Contains(stdout, "\n  "+flag+"\n") {
					t.Errorf("help lists no %s:\n%s", flag, stdout)
				}
			}
		})
	}
}

func TestHelpOfCommandWithoutFlags(t *testing.T) {
	code, stdout, _ := runKmsctl(t, "describe-key", "--help")
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if !strings.Contains(stdout, "kmsctl describe-key takes no flags.") {
		t.Errorf("help does not say that describe-key takes no flags:\n%s", stdout)
	}
}

func TestHelpGlobalFlags(t *testing.T) {
	code, stdout, stderr := runKmsctl(t, "--help")
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	for _, want := range []string{"usage: kmsctl", "-endpoint", "-credentials", "-ca-file",
		"kmsctl COMMAND --help"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("kmsctl --help printed no %q:\n%s", want, stdout)
		}
	}
	if stderr != "" {
		t.Errorf("stderr is not empty:\n%s", stderr)
	}

	code, stdout, stderr = runKmsctl(t, "--no-such-flag")
	if code != 2 {
		t.Errorf("exit code for an invalid flag %d, want 2", code)
	}
	if !strings.Contains(stderr, "flag provided but not defined: -no-such-flag") ||
		!strings.Contains(stderr, "global flags") {
		t.Errorf("stderr has no error message and usage:\n%s", stderr)
	}
	if stdout != "" {
		t.Errorf("stdout is not empty:\n%s", stdout)
	}
}

func TestCommandWithoutCredentials(t *testing.T) {
	code, stdout, stderr := runKmsctl(t, "describe-key", "KEY")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr, "kmsctl describe-key: this command calls kmsd: no credentials") {
		t.Errorf("stderr does not say that credentials are missing:\n%s", stderr)
	}
	if stdout != "" {
		t.Errorf("stdout is not empty:\n%s", stdout)
	}
}
