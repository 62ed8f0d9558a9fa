package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestAppendFileTime(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		at   time.Time
	}{
		{"zero time", time.Time{}},
		{"ordinary", time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)},
		{"milliseconds", time.Date(2026, 12, 5, 6, 7, 8, 9_000_000, time.UTC)},
		{"leap day, last millisecond", time.Date(2024, 2, 29, 23, 59, 59, 999_000_000, time.UTC)},
		{"year 0", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC)},
		{"year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"negative year", time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC)},
		{"other location", time.Date(2025, 3, 1, 12, 0, 0, 0, cet)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.at.Format(fileTimeLayout)
			if got := string(appendFileTime([]byte("x"), tt.at)); got != "x"+want {
				t.Errorf("appendFileTime = %q, want %q", got, "x"+want)
			}
		})
	}
}

// TestAppendFileTimeRandom compares appendFileTime with time.Time.Format over random
// stored times from year 0 to 9999.
func TestAppendFileTimeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	first := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	last := time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC).UnixMilli()
	for range 100_000 {
		at := storedTime(time.UnixMilli(first + rng.Int64N(last-first+1)))
		want := at.Format(fileTimeLayout)
		if got := string(appendFileTime(nil, at)); got != want {
			t.Fatalf("appendFileTime(%v) = %q, want %q", at, got, want)
		}
	}
}

// decodeFileLineJSON decodes line with encoding/json, as decodeFileLine did before it
// used jsonscan. The tests compare the two.
func decodeFileLineJSON(line []byte) (fileLine, error) {
	var l fileLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return fileLine{}, err
	}
	if dec.More() {
		return fileLine{}, errors.New("data after the object")
	}
	return l, nil
}

func TestDecodeFileLineWrittenLines(t *testing.T) {
	at := time.Date(2026, 12, 5, 9, 18, 1, 773_000_000, time.UTC)
	lines := map[string][]byte{
		"chain": appendChainLine(nil, AuditChain{ID: "1e45ffb8-b57f-4e54-aa57-8f2ca1e365ca",
			StartedAt: at, Host: "vm"}),
		"first record": appendRecordLine(nil, AuditRecord{ChainID: "c", Seq: 1, Time: at,
			RequestID: "9c09", AccessKey: "N3KG", UserID: "7d00", ProjectID: "247c",
			SourceIP: "127.0.0.1", Operation: "create-key", KeyID: "8ed1", KeyVersion: 1,
			Status: 200, Hash: bytes.Repeat([]byte{0x11}, 32)}),
		"failed record with escapes": appendRecordLine(nil, AuditRecord{ChainID: "c",
			Seq: 18446744073709551615, Time: at, Operation: "describe-key",
			KeyID: "\"quoted\"\\ \u2028 é", GrantID: "g1,g2", Status: 400,
			ErrorCode: "KMS.0205", Sequence: "919c82d4-8046-4722-9094-35c3c6524cff",
			PrevHash: bytes.Repeat([]byte{0xab}, 32), Hash: bytes.Repeat([]byte{0xcd}, 32)}),
		"checkpoint": appendCheckpointLine(nil, AuditCheckpoint{ChainID: "c", Seq: 1000,
			RecordHash: bytes.Repeat([]byte{0x16}, 32), Signature: []byte{0x30, 0x45}}),
	}
	for name, line := range lines {
		t.Run(name, func(t *testing.T) {
			line = bytes.TrimSuffix(line, []byte("\n"))
			got, err := decodeFileLine(line)
			if err != nil {
				t.Fatalf("decodeFileLine: %v\n%s", err, line)
			}
			want, err := decodeFileLineJSON(line)
			if err != nil {
				t.Fatalf("encoding/json: %v\n%s", err, line)
			}
			if got != want {
				t.Errorf("decodeFileLine = %+v\nencoding/json = %+v", got, want)
			}
		})
	}
}

func TestDecodeFileLineRejects(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"unknown field", `{"type":"record","extra":1}`},
		{"field given twice", `{"type":"record","type":"checkpoint"}`},
		{"seq as a string", `{"type":"record","seq":"5"}`},
		{"negative seq", `{"type":"record","seq":-5}`},
		{"fractional status", `{"type":"record","status":200.5}`},
		{"key_version over 32 bits", `{"type":"record","key_version":4294967296}`},
		{"null value", `{"type":null}`},
		{"number as a string field", `{"type":7}`},
		{"data after the object", `{"type":"record"} {}`},
		{"not an object", `["type"]`},
		{"cut short", `{"type":"rec`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := decodeFileLine([]byte(tt.line)); err == nil {
				t.Errorf("decodeFileLine(%s) = %+v, want an error", tt.line, l)
			}
		})
	}
}

// FuzzDecodeFileLine checks that decodeFileLine accepts only lines that encoding/json
// also accepts, and that the two then decode the same fields.
func FuzzDecodeFileLine(f *testing.F) {
	f.Add([]byte(`{"type":"record","chain_id":"c","seq":1,"time":"2026-12-05T09:18:01.773Z",` +
		`"status":200,"hash":"11"}`))
	f.Add([]byte(`{"type":"checkpoint","chain_id":"c","seq":1000,"record_hash":"16","signature":"30"}`))
	f.Add([]byte(`{"type":"chain","chain_id":"c","started_at":"2026-12-05T09:18:01.720Z","host":"vm"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		got, err := decodeFileLine(line)
		if err != nil {
			return
		}
		want, err := decodeFileLineJSON(line)
		if err != nil {
			t.Fatalf("decodeFileLine accepted %q, which encoding/json rejects: %v", line, err)
		}
		if got != want {
			t.Fatalf("%q: decodeFileLine = %+v, encoding/json = %+v", line, got, want)
		}
	})
}
