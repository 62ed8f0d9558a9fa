package store_test

import (
	"sync"
	"testing"

	"github.com/hsmkms/kms/service/store/storetest"
)

func TestRecordOperatorProject(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		if project, ok, err := s.OperatorProject(ctx); err != nil || ok {
			t.Fatalf("OperatorProject of a new store = %q, %t, %v; expected none", project,
				ok, err)
		}

		recorded, err := s.RecordOperatorProject(ctx, "first")
		checkErr(t, "RecordOperatorProject(first)", err, nil)
		if recorded != "first" {
			t.Errorf("RecordOperatorProject(first) = %q, expected first", recorded)
		}

		recorded, err = s.RecordOperatorProject(ctx, "second")
		checkErr(t, "RecordOperatorProject(second)", err, nil)
		if recorded != "first" {
			t.Errorf("RecordOperatorProject(second) = %q, expected the first record kept",
				recorded)
		}

		project, ok, err := s.OperatorProject(ctx)
		checkErr(t, "OperatorProject", err, nil)
		if !ok || project != "first" {
			t.Errorf("OperatorProject = %q, %t; expected first", project, ok)
		}

		if _, err := s.RecordOperatorProject(ctx, ""); err == nil {
			t.Error("RecordOperatorProject accepted an empty project id")
		}
	})
}

// TestRecordOperatorProjectConcurrent records from many goroutines on one store, as
// replicas starting together do: all must get the same project.
func TestRecordOperatorProjectConcurrent(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		t.Parallel()
		s := openStore(t, b)
		ctx := t.Context()

		const callers = 8
		results := make([]string, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				results[i], errs[i] = s.RecordOperatorProject(ctx,
					string(rune('a'+i))+"-project")
			})
		}
		wg.Wait()

		for i := range callers {
			checkErr(t, "RecordOperatorProject", errs[i], nil)
			if results[i] != results[0] {
				t.Errorf("caller %d got %q, caller 0 got %q", i, results[i], results[0])
			}
		}
	})
}
