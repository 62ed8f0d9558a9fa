package softhsmtest

import (
	"testing"
)

func TestNewTestTokenFreshLabels(t *testing.T) {
	first := NewTestToken(t)
	second := NewTestToken(t)

	if first.TokenLabel == second.TokenLabel {
		t.Errorf("two calls returned the label %q", first.TokenLabel)
	}
	if first.ConfPath != second.ConfPath {
		t.Errorf("tokens use configurations %s and %s, expected one per process",
			first.ConfPath, second.ConfPath)
	}

	pin, err := second.UserPIN()
	if err != nil {
		t.Fatal(err)
	}
	if len(pin) < 16 {
		t.Errorf("user PIN has %d characters, expected at least 16", len(pin))
	}
}
