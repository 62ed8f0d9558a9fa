package main

import (
	"runtime"
	"testing"
)

func TestAddTokenProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	tests := []struct {
		name       string
		env        string
		tokenCalls int
		want       int
	}{
		{"one token call", "", 1, runtimeProcs + 1},
		{"no bound on token calls", "", 0, runtimeProcs},
		{"more token calls than processors", "", 10 * runtimeProcs, 2 * runtimeProcs},
		{"GOMAXPROCS in the environment", "3", 1, runtimeProcs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(runtimeProcs)
			getenv := func(name string) string {
				if name == "GOMAXPROCS" {
					return tc.env
				}
				return ""
			}

			got := addTokenProcs(tc.tokenCalls, getenv)
			if got != tc.want {
				t.Errorf("addTokenProcs returned %d, want %d", got, tc.want)
			}
			if procs := runtime.GOMAXPROCS(0); procs != tc.want {
				t.Errorf("GOMAXPROCS = %d after addTokenProcs, want %d", procs, tc.want)
			}
		})
	}
}
