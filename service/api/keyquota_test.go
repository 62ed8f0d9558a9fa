package api

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/hsmkms/kms/service"
)

// TestCreateKeyQuotaParallel repeats the tester's step: more parallel create-key calls
// on a fresh project than its quota allows. Exactly the quota succeeds and every other
// call answers 400 KMS.1105.
func TestCreateKeyQuotaParallel(t *testing.T) {
	const quota, calls = 20, 30
	e := newTestEnvWith(t, service.Config{KeysPerProject: quota})

	results := make([]response, calls)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			<-start
			results[i] = e.admin.post(t, "create-key",
				map[string]any{"key_alias": fmt.Sprintf("parallel-%d", i)})
		})
	}
	close(start)
	wg.Wait()

	created := 0
	for i, r := range results {
		if r.Status == http.StatusOK {
			created++
			continue
		}
		checkError(t, fmt.Sprintf("create-key %d", i), r, http.StatusBadRequest, "KMS.1105")
	}
	if created != quota {
		t.Errorf("%d of %d parallel create-key calls succeeded, want the quota %d", created,
			calls, quota)
	}

	r := e.admin.mustPost(t, "list-keys", map[string]any{"limit": "100"})
	if got := fmt.Sprint(r.Body["total"]); got != fmt.Sprint(quota) {
		t.Errorf("list-keys total = %s after parallel creations, want %d", got, quota)
	}
}
