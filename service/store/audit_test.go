package store_test

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hsmkms/kms/service/store"
	"github.com/hsmkms/kms/service/store/storetest"
)

// auditRecords returns n records of chain seq first to first+n-1, with every field set.
func auditRecords(chainID string, first uint64, n int) []store.AuditRecord {
	records := make([]store.AuditRecord, n)
	for i := range records {
		seq := first + uint64(i)
		records[i] = store.AuditRecord{
			ChainID:    chainID,
			Seq:        seq,
			Time:       baseTime.Add(time.Duration(seq)*time.Second + 123*time.Millisecond),
			RequestID:  fmt.Sprintf("request-%d", seq),
			AccessKey:  "AK0000000000000000001",
			UserID:     "user-1",
			ProjectID:  "project-1",
			SourceIP:   "127.0.0.1",
			Operation:  "decrypt-datakey",
			KeyID:      "0d0466b0-e727-4d9c-b35d-f84bb474a37f",
			KeyVersion: 2,
			GrantID:    "grant-1",
			Status:     400,
			ErrorCode:  "KMS.0205",
			Sequence:   "919c82d4-8046-4722-9094-35c3c6524cff",
			PrevHash:   bytes.Repeat([]byte{byte(seq - 1)}, 32),
			Hash:       bytes.Repeat([]byte{byte(seq)}, 32),
		}
	}
	records[0].PrevHash = nil
	return records
}

func TestAuditAppendAndRead(t *testing.T) {
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		s := openStore(t, b)
		ctx := t.Context()

		checkErr(t, "CreateAuditChain", s.CreateAuditChain(ctx, store.AuditChain{
			ID: "chain-a", StartedAt: baseTime, Host: "host-a"}), nil)

		// 250 records span three multi-row INSERTs.
		records := auditRecords("chain-a", 1, 250)
		checkpoint := store.AuditCheckpoint{ChainID: "chain-a", Seq: 250,
			RecordHash: records[249].Hash, Signature: []byte("signature")}
		checkErr(t, "AppendAudit", s.AppendAudit(ctx, records,
			[]store.AuditCheckpoint{checkpoint}), nil)

		got, err := s.ListAuditRecords(ctx, "chain-a", 0, 1000)
		checkErr(t, "ListAuditRecords", err, nil)
		if len(got) != len(records) {
			t.Fatalf("ListAuditRecords returned %d records, want %d", len(got), len(records))
		}
		records[0].PrevHash = []byte{}
		for i := range records {
			if !reflect.DeepEqual(got[i], records[i]) {
				t.Fatalf("record %d:\n got  %+v\n want %+v", i+1, got[i], records[i])
			}
		}

		page, err := s.ListAuditRecords(ctx, "chain-a", 100, 10)
		checkErr(t, "ListAuditRecords page", err, nil)
		if len(page) != 10 || page[0].Seq != 101 || page[9].Seq != 110 {
			t.Errorf("page after 100 of 10 has %d records starting at %d", len(page),
				page[0].Seq)
		}

		last, err := s.LastAuditRecord(ctx, "chain-a")
		checkErr(t, "LastAuditRecord", err, nil)
		if last.Seq != 250 {
			t.Errorf("LastAuditRecord seq = %d, want 250", last.Seq)
		}

		checkpoints, err := s.ListAuditCheckpoints(ctx, "chain-a", 0, 10)
		checkErr(t, "ListAuditCheckpoints", err, nil)
		if len(checkpoints) != 1 || !reflect.DeepEqual(checkpoints[0], checkpoint) {
			t.Errorf("ListAuditCheckpoints = %+v, want [%+v]", checkpoints, checkpoint)
		}
	})
}

func TestAuditAppendConflictWritesNothing(t *testing.T) {
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		s := openStore(t, b)
		ctx := t.Context()

		checkErr(t, "first AppendAudit", s.AppendAudit(ctx, auditRecords("c", 1, 3), nil), nil)

		// Seq 3 exists, so records 3 and 4 and the checkpoint are all rejected.
		batch := auditRecords("c", 3, 2)
		checkpoint := store.AuditCheckpoint{ChainID: "c", Seq: 4, RecordHash: batch[1].Hash,
			Signature: []byte("s")}
		err := s.AppendAudit(ctx, batch, []store.AuditCheckpoint{checkpoint})
		checkErr(t, "overlapping AppendAudit", err, store.ErrConflict)

		last, err := s.LastAuditRecord(ctx, "c")
		checkErr(t, "LastAuditRecord", err, nil)
		if last.Seq != 3 {
			t.Errorf("last seq after a rejected batch = %d, want 3", last.Seq)
		}
		checkpoints, err := s.ListAuditCheckpoints(ctx, "c", 0, 10)
		checkErr(t, "ListAuditCheckpoints", err, nil)
		if len(checkpoints) != 0 {
			t.Errorf("a rejected batch left %d checkpoints", len(checkpoints))
		}
	})
}

func TestAuditChainsAndEmptyChain(t *testing.T) {
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		s := openStore(t, b)
		ctx := t.Context()

		for _, c := range []store.AuditChain{
			{ID: "later", StartedAt: baseTime.Add(time.Hour), Host: "h2"},
			{ID: "earlier", StartedAt: baseTime, Host: "h1"},
		} {
			checkErr(t, "CreateAuditChain "+c.ID, s.CreateAuditChain(ctx, c), nil)
		}
		err := s.CreateAuditChain(ctx, store.AuditChain{ID: "later"})
		checkErr(t, "CreateAuditChain of an existing id", err, store.ErrConflict)

		// A chain whose row is missing is still listed, after the others.
		err = s.AppendAudit(ctx, auditRecords("no-row", 1, 2), nil)
		checkErr(t, "AppendAudit without a chain row", err, nil)

		chains, err := s.ListAuditChains(ctx)
		checkErr(t, "ListAuditChains", err, nil)
		want := []store.AuditChain{
			{ID: "earlier", StartedAt: baseTime, Host: "h1"},
			{ID: "later", StartedAt: baseTime.Add(time.Hour), Host: "h2"},
			{ID: "no-row"},
		}
		if !reflect.DeepEqual(chains, want) {
			t.Errorf("ListAuditChains = %+v, want %+v", chains, want)
		}

		_, err = s.LastAuditRecord(ctx, "earlier")
		checkErr(t, "LastAuditRecord of an empty chain", err, store.ErrNotFound)

		records, err := s.ListAuditRecords(ctx, "earlier", 0, 10)
		checkErr(t, "ListAuditRecords of an empty chain", err, nil)
		if len(records) != 0 {
			t.Errorf("empty chain has %d records", len(records))
		}
	})
}

func TestAuditAppendRejectsIncompleteRecord(t *testing.T) {
	storetest.Run(t, func(t *testing.T, b storetest.Backend) {
		s := openStore(t, b)

		record := auditRecords("c", 1, 1)[0]
		record.Time = time.Time{}
		if err := s.AppendAudit(t.Context(), []store.AuditRecord{record}, nil); err == nil {
			t.Fatal("AppendAudit accepted a record without a time")
		}
	})
}
