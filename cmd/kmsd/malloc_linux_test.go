//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestKmsdMallocTunables(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{name: "unset gets kmsd's value", want: mallocTunables},
		{
			name: "operator value kept",
			env:  []string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2"},
			want: "glibc.malloc.arena_max=2",
		},
		{name: "empty value kept", env: []string{"GLIBC_TUNABLES="}, want: ""},
	}

	// The unset case needs a test process without the variable.
	t.Setenv("GLIBC_TUNABLES", "")
	if err := os.Unsetenv("GLIBC_TUNABLES"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startKmsd(t, t.TempDir(), tc.env...)

			// The PID is the one the test started, so the values are those of the
			// process image that serves, after any exec.
			values := environValues(t, p.cmd.Process.Pid, "GLIBC_TUNABLES")
			if len(values) != 1 {
				t.Fatalf("GLIBC_TUNABLES values = %q, want exactly one", values)
			}
			if values[0] != tc.want {
				t.Errorf("GLIBC_TUNABLES = %q, want %q", values[0], tc.want)
			}

			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(comm)); got != "kmsd" {
				t.Errorf("process name = %q, want kmsd (pgrep and ps -C match it)", got)
			}

			p.stop(t)
			if strings.Contains(p.logs.String(), "default malloc settings") {
				t.Errorf("kmsd logged a failed exec:\n%s", p.logs)
			}
		})
	}
}

// environValues returns the values of name in the environment of process pid.
func environValues(t *testing.T, pid int, name string) []string {
	t.Helper()
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}

	var values []string
	for _, entry := range bytes.Split(environ, []byte{0}) {
		if v, ok := strings.CutPrefix(string(entry), name+"="); ok {
			values = append(values, v)
		}
	}
	return values
}
