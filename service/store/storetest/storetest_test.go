package storetest_test

import (
	"testing"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

func TestBackendsAreFreshAndEmpty(t *testing.T) {
	first := storetest.Backends(t)
	second := storetest.Backends(t)

	for i, b := range first {
		t.Run(b.Name, func(t *testing.T) {
			if b.Skip != "" {
				t.Skip(b.Skip)
			}
			if b.URL == second[i].URL {
				t.Errorf("two calls returned one database URL %q", b.URL)
			}

			s, err := store.Open(t.Context(), b.URL, nil)
			if err != nil {
				t.Fatalf("Open(%s) failed: %v", b.Name, err)
			}
			defer s.Close()

			creds, err := s.ListCredentials(t.Context())
			if err != nil {
				t.Fatalf("ListCredentials failed: %v", err)
			}
			if len(creds) != 0 {
				t.Errorf("fresh database has %d credentials, want 0", len(creds))
			}
		})
	}
}
