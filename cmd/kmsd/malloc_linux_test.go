//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

func TestKmsdMallocTunables(t *testing.T) {
	if _, err := softhsmsetup.FindModule(); err != nil {
		t.Skip(err)
	}
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")
	link := filepath.Join(t.TempDir(), "kms-link")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		bin      string
		argv0    string // the first argument, bin when empty
		env      []string
		want     string
		wantName string
		wantLog  string
	}{
		{
			name: "unset gets kmsd's value", bin: bin, want: mallocTunables,
			wantName: "kmsd", wantLog: "glibc malloc tunables set",
		},
		{
			name: "symlink keeps its name", bin: link, want: mallocTunables,
			wantName: "kms-link", wantLog: "glibc malloc tunables set",
		},
		{
			name: "first argument other than the file", bin: bin, argv0: "custom-argv0",
			want: mallocTunables, wantName: "kmsd", wantLog: "glibc malloc tunables set",
		},
		{
			name: "operator value kept", bin: bin,
			env:  []string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2"},
			want: "glibc.malloc.arena_max=2", wantName: "kmsd",
			wantLog: "kept as the environment sets it",
		},
		{
			name: "empty value kept", bin: bin, env: []string{"GLIBC_TUNABLES="}, want: "",
			wantName: "kmsd", wantLog: "kept as the environment sets it",
		},
	}

	// The unset cases need a test process without the variable.
	t.Setenv("GLIBC_TUNABLES", "")
	if err := os.Unsetenv("GLIBC_TUNABLES"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			argv0 := tc.argv0
			if argv0 == "" {
				argv0 = tc.bin
			}
			p := startKmsdAs(t, tc.bin, argv0, t.TempDir(), tc.env...)

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
			if got := strings.TrimSpace(string(comm)); got != tc.wantName {
				t.Errorf("process name = %q, want %q (pgrep and ps -C match it)", got,
					tc.wantName)
			}
			for tid, name := range threadNames(t, p.cmd.Process.Pid) {
				if name != tc.wantName {
					t.Errorf("thread %s name = %q, want %q (top -H and perf show it)", tid,
						name, tc.wantName)
				}
			}

			p.stop(t)
			if !strings.Contains(p.logs.String(), tc.wantLog) {
				t.Errorf("kmsd logged no %q:\n%s", tc.wantLog, p.logs)
			}
			if strings.Contains(p.logs.String(), "default malloc settings") {
				t.Errorf("kmsd logged a failed exec:\n%s", p.logs)
			}
		})
	}
}

// threadNames returns the names of the threads of process pid by thread id.
func threadNames(t *testing.T, pid int) map[string]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make(map[string]string, len(tasks))
	for _, task := range tasks {
		comm, err := os.ReadFile(filepath.Join(dir, task.Name(), "comm"))
		if err != nil {
			continue // the thread ended
		}
		names[task.Name()] = strings.TrimSpace(string(comm))
	}
	return names
}

func TestSecureExecution(t *testing.T) {
	entry := func(key, value uint64) []byte {
		return binary.NativeEndian.AppendUint64(binary.NativeEndian.AppendUint64(nil, key),
			value)
	}
	pageSize := entry(6, 4096) // AT_PAGESZ
	end := entry(atNull, 0)

	tests := []struct {
		name string
		auxv []byte
		want bool
	}{
		{"secure", bytes.Join([][]byte{pageSize, entry(atSecure, 1), end}, nil), true},
		{"not secure", bytes.Join([][]byte{pageSize, entry(atSecure, 0), end}, nil), false},
		{"no entry", bytes.Join([][]byte{pageSize, end}, nil), false},
		{"entry after the end", bytes.Join([][]byte{end, entry(atSecure, 1)}, nil), false},
		{"cut short", entry(atSecure, 1)[:12], false},
		{"empty", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := secureExecution(tc.auxv); got != tc.want {
				t.Errorf("secureExecution = %v, want %v", got, tc.want)
			}
		})
	}

	auxv, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		t.Fatal(err)
	}
	if secureExecution(auxv) {
		t.Error("the test process reads as secure-execution mode")
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
