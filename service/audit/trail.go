package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/store"
)

// SigningKey is the token key pair that signs checkpoints. Every replica on one token
// uses the same pair, so one public key verifies every chain.
var SigningKey = hsm.KeyRef{KeyID: "system-audit", Version: 1}

// ErrClosed is returned by Record after Close.
var ErrClosed = errors.New("audit trail is closed")

// Signer is the part of hsm.Token that a Trail uses.
type Signer interface {
	GenerateSigningKey(ctx context.Context, ref hsm.KeyRef) error
	Sign(ctx context.Context, ref hsm.KeyRef, digest []byte) ([]byte, error)
	PublicKey(ctx context.Context, ref hsm.KeyRef) (crypto.PublicKey, error)
}

// Defaults of Config.
const (
	DefaultBatchSize          = 256
	DefaultMaxDelay           = 0
	DefaultBatchWait          = time.Millisecond
	DefaultCheckpointRecords  = 1000
	DefaultCheckpointInterval = time.Minute
	DefaultWriteTimeout       = 10 * time.Second
)

// Config holds the settings of a Trail. A zero field selects its default.
type Config struct {
	// BatchSize is the maximum number of records in one commit (transaction or chain file
	// write).
	BatchSize int
	// MaxDelay is how long the first record of a batch waits for more records before
	// the batch is committed, whatever the load. Zero (the default) selects the adaptive
	// wait of BatchWait instead.
	MaxDelay time.Duration
	// BatchWait applies when MaxDelay is zero. A batch is committed at once while fewer
	// than lingerMinRecords records wait and the last batch was smaller too, or while
	// Clients reports fewer than lingerMinClients. Under heavier load a batch takes
	// records for up to BatchWait, and closes earlier when no record arrives for
	// batchGap, so that one commit serves many calls. Zero selects DefaultBatchWait, and
	// a negative value disables the wait.
	BatchWait time.Duration
	// CheckpointRecords is the number of records after which a checkpoint is signed.
	CheckpointRecords int
	// CheckpointInterval is the maximum age of the oldest record not yet covered by a
	// checkpoint while the trail runs and the token can sign.
	CheckpointInterval time.Duration
	// WriteTimeout bounds one store write.
	WriteTimeout time.Duration
	// Host is stored with the chain to tell replicas apart. It is informational only.
	Host string
	// Logger receives start, stop and write failures. Nil discards them.
	Logger *slog.Logger
	// Observer receives the size and delay of every committed batch. Nil selects
	// NopObserver.
	Observer BatchObserver
	// Clients returns how many clients can send calls at the moment, such as the open
	// connections of the HTTP server. When it is set, a batch waits for more records
	// (BatchWait) only while it returns at least lingerMinClients. Nil leaves the decision
	// to the batch sizes alone.
	Clients func() int
}

func (c Config) withDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxDelay < 0 {
		c.MaxDelay = 0
	}
	if c.BatchWait == 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.CheckpointRecords <= 0 {
		c.CheckpointRecords = DefaultCheckpointRecords
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	return c
}

// Trail is the Recorder of the tamper-evident audit trail. It writes one hash chain,
// started by Open with a new random id and linked to no earlier chain, so replicas
// sharing one database never write the same chain and a restart never continues an old
// one.
//
// Record is safe for concurrent use. Concurrent records are committed in batches by one
// writer goroutine (group commit), a lone record by its Record call, and each Record call
// returns when the commit holding its record is done.
type Trail struct {
	store  store.AuditStore
	signer Signer
	cfg    Config
	log    *slog.Logger

	chainID string

	keyMu     sync.Mutex       // guards publicKey
	publicKey *ecdsa.PublicKey // nil until the token has given it

	mu      sync.RWMutex // guards closed against sends on queue
	closed  bool
	queue   chan *pending
	stopped chan struct{}
	gap     time.Duration // batchGap; tests lengthen it

	// writeMu is held by the goroutine that commits: the writer goroutine, or a Record
	// call that finds the queue empty and commits its record itself. It guards the
	// writer state below.
	writeMu sync.Mutex
	// writerHolds is true while the writer goroutine holds records taken off the queue
	// that are not committed yet. Record does not commit past them.
	writerHolds atomic.Bool

	// inline is true when the store appends to the chain locally (see
	// store.LocalAuditAppender) and MaxDelay is zero. Each Record call then commits its
	// own record under writeMu, and the writer goroutine only signs checkpoints.
	inline bool

	// Writer state.
	records          []Record            // the batch being committed, reused
	stored           []store.AuditRecord // records placed in the chain, reused
	lastSeq          uint64
	lastHash         []byte
	lastSigned       uint64 // seq of the record that the last stored checkpoint signs, or 0
	unsigned         int    // records after the last checkpoint
	oldestUnsignedAt time.Time
	resync           bool // a write failed: reread the chain's end before the next one
	lastBatch        int  // records in the last committed batch, 0 after a failed one
	writeFailures    int  // batch writes failed in a row, for logging once per outage
	signFailures     int  // checkpoint signatures failed in a row, for logging once per outage

	// failedAt is when the last write of records failed, in Unix nanoseconds, or 0 when
	// the last write succeeded. Healthy reads it without writeMu.
	failedAt atomic.Int64
}

var _ Recorder = (*Trail)(nil)

// pending is one Record call waiting for its batch.
type pending struct {
	record   Record
	enqueued time.Time
	done     chan error
}

// Open starts a new chain in st and starts the writer; Close stops it. It also makes
// sure the signing key pair exists in the token, generating it on first use. A token
// that is unavailable (hsm.ErrUnavailable) does not fail Open: records are then
// written unsigned until the token is back and a checkpoint covers them.
func Open(ctx context.Context, st store.AuditStore, signer Signer, cfg Config) (*Trail, error) {
	cfg = cfg.withDefaults()

	public, err := ensureSigningKey(ctx, signer)
	if errors.Is(err, hsm.ErrUnavailable) {
		cfg.Logger.Warn("audit signing key not available yet; checkpoints wait for the token",
			"error", err)
	} else if err != nil {
		return nil, err
	}

	chainID, err := newChainID()
	if err != nil {
		return nil, err
	}
	if err := st.CreateAuditChain(ctx, store.AuditChain{ID: chainID, Host: cfg.Host}); err != nil {
		return nil, fmt.Errorf("start audit chain: %w", err)
	}

	t := &Trail{
		store:     st,
		signer:    signer,
		cfg:       cfg,
		log:       cfg.Logger,
		chainID:   chainID,
		publicKey: public,
		queue:     make(chan *pending, 4*cfg.BatchSize),
		stopped:   make(chan struct{}),
		gap:       batchGap,
	}
	if local, ok := st.(store.LocalAuditAppender); ok && cfg.MaxDelay == 0 {
		t.inline = local.AuditAppendIsLocal(chainID)
	}
	go t.run()

	t.log.Info("audit chain started", "chain_id", chainID, "host", cfg.Host,
		"batch_size", cfg.BatchSize, "max_delay", cfg.MaxDelay, "batch_wait", cfg.BatchWait,
		"checkpoint_records", cfg.CheckpointRecords,
		"checkpoint_interval", cfg.CheckpointInterval, "inline_commits", t.inline)
	return t, nil
}

// ensureSigningKey returns the public key of SigningKey, generating the pair when the
// token lacks it. Another replica generating it at the same moment is not an error.
func ensureSigningKey(ctx context.Context, signer Signer) (*ecdsa.PublicKey, error) {
	public, err := signer.PublicKey(ctx, SigningKey)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		err = signer.GenerateSigningKey(ctx, SigningKey)
		if err != nil && !errors.Is(err, hsm.ErrKeyExists) {
			return nil, fmt.Errorf("generate audit signing key: %w", err)
		}
		public, err = signer.PublicKey(ctx, SigningKey)
	}
	if err != nil {
		return nil, fmt.Errorf("read audit signing key: %w", err)
	}

	ec, ok := public.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("audit signing key %s is %T, expected an ECDSA P-256 key",
			SigningKey, public)
	}
	return ec, nil
}

// newChainID returns a random UUID (version 4).
func newChainID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate audit chain id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// ChainID returns the id of the chain this trail writes. It changes when a chain file is
// cut short under the trail (see write).
func (t *Trail) ChainID() string {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	return t.chainID
}

// PublicKey returns the public key that verifies the checkpoints, reading it from the
// token (and generating the pair) when Open could not.
func (t *Trail) PublicKey(ctx context.Context) (*ecdsa.PublicKey, error) {
	t.keyMu.Lock()
	defer t.keyMu.Unlock()

	if t.publicKey != nil {
		return t.publicKey, nil
	}
	public, err := ensureSigningKey(ctx, t.signer)
	if err != nil {
		return nil, err
	}
	t.publicKey = public
	return public, nil
}

// Record commits r, alone or in a batch with the records of concurrent calls, and
// returns when the commit is done. It returns the store's error when that commit failed,
// ErrClosed after Close, and ctx's error when ctx ends first. In that last case the record
// may still be committed later. A ctx without a deadline ends after twice WriteTimeout. A zero r.Time is set to now; times are kept at
// millisecond precision.
//
// On a store that appends locally (store.LocalAuditAppender, a chain file) with MaxDelay
// zero, every Record call commits r itself, after the commit in progress if there is one.
// Handing r to the writer goroutine and back costs two wake-ups of a sleeping thread,
// more than the few microseconds of the append. Callers that wait for another goroutine
// also leave the processors idle. In scripts/bench.sh runs at 64 connections on a 2-core
// machine, inline commits cut the idle CPU time from 13% to 5%.
//
// On other stores, when no record is queued and no commit runs, Record commits r itself
// too, which spares a lone caller the same two wake-ups. Otherwise r joins the writer's
// next batch, so that one round trip to the database serves many calls.
func (t *Trail) Record(ctx context.Context, r Record) error {
	if t.inline {
		return t.recordInline(r)
	}

	// The API records a finished call with a context that its client's hang-up does not
	// cancel. So a wait without a deadline is bounded here, by the commit in progress and
	// the one that takes r, each of which gives up after WriteTimeout.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*t.cfg.WriteTimeout)
		defer cancel()
	}

	p := &pending{record: r, enqueued: time.Now(), done: make(chan error, 1)}

	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return ErrClosed
	}
	if t.cfg.MaxDelay == 0 && len(t.queue) == 0 && !t.writerHolds.Load() &&
		t.writeMu.TryLock() {
		t.commit([]*pending{p})
		t.writeMu.Unlock()
		t.mu.RUnlock()
		return <-p.done
	}
	select {
	case t.queue <- p:
	case <-ctx.Done():
		t.mu.RUnlock()
		return fmt.Errorf("enqueue audit record: %w", ctx.Err())
	}
	t.mu.RUnlock()

	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for audit commit: %w", ctx.Err())
	}
}

// recordInline commits r in the calling goroutine. The append is local and takes
// microseconds, so it does not take a context: a caller that gives up could not stop it.
func (t *Trail) recordInline(r Record) error {
	enqueued := time.Now()

	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return ErrClosed
	}

	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.records = append(t.records[:0], r)
	return t.write(context.Background(), t.records, enqueued)
}

// Close stops accepting records, commits every record already enqueued, signs a final
// checkpoint over the end of the chain, and stops the writer. It is safe to call more
// than once.
func (t *Trail) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.queue)
	}
	t.mu.Unlock()

	<-t.stopped
	return nil
}

// run is the writer goroutine.
func (t *Trail) run() {
	defer close(t.stopped)

	ticker := time.NewTicker(t.cfg.CheckpointInterval)
	defer ticker.Stop()

	for {
		select {
		case first, ok := <-t.queue:
			if ok {
				t.writerHolds.Store(true)
			}
			t.writeMu.Lock()
			if !ok {
				t.writeCheckpoint(time.Now(), true)
				t.log.Info("audit chain stopped", "chain_id", t.chainID, "records", t.lastSeq,
					"signed_through", t.lastSigned)
				t.writeMu.Unlock()
				return
			}
			t.commit(t.collect(first))
			t.writerHolds.Store(false)
			t.writeMu.Unlock()
		case now := <-ticker.C:
			t.writeMu.Lock()
			t.writeCheckpoint(now, false)
			t.writeMu.Unlock()
		}
	}
}

// collect returns a batch that starts with first: up to BatchSize records, gathered for
// at most MaxDelay, or as BatchWait describes when MaxDelay is zero.
func (t *Trail) collect(first *pending) []*pending {
	batch := []*pending{first}
	if t.cfg.MaxDelay == 0 {
		batch = t.drain(batch)
		busy := (len(batch) >= lingerMinRecords || t.lastBatch >= lingerMinRecords) &&
			(t.cfg.Clients == nil || t.cfg.Clients() >= lingerMinClients)
		if !busy || len(batch) >= t.cfg.BatchSize || t.cfg.BatchWait < 0 {
			return batch // a lone caller, or a few, never waits
		}
		return t.linger(batch)
	}
	timer := time.NewTimer(t.cfg.MaxDelay)
	defer timer.Stop()

	for len(batch) < t.cfg.BatchSize {
		select {
		case p, ok := <-t.queue:
			if !ok {
				return batch // the next receive in run gets the closed queue
			}
			batch = append(batch, p)
		case <-timer.C:
			return batch
		}
	}
	return batch
}

// lingerMinRecords is the batch size, of the drained queue or of the last batch, from
// which a batch waits for more records. Below it the callers are so few that waiting
// costs them more than the commits it saves. With 2 to 8 concurrent create-datakey
// clients on SQLite, a wait for every batch lowered throughput by 25 to 35% and raised
// the batches only to about two records.
const lingerMinRecords = 4

// lingerMinClients is the number of clients (Config.Clients) from which a batch waits for
// more records. A batch that waits holds its callers, and with few clients nothing else
// keeps the CPU busy meanwhile. With 8 create-datakey clients on SQLite, waiting gave
// batches of five records and 35 to 45% less throughput, while with 64 it gave 15 to 25%
// more (2-core machine, clients on the same machine).
const lingerMinClients = 32

// batchGap closes a batch of concurrent callers early when no record arrives for this
// long, because the callers still to come are then few or slow. In scripts/bench.sh runs
// of decrypt-datakey at 64 connections, committing only what had queued gave batches of
// about three records, and their SQLite commits cost more CPU than the token. Waiting up
// to BatchWait while records keep arriving gave batches of ten to fifteen.
const batchGap = 300 * time.Microsecond

// linger adds records to batch until BatchWait has passed since it started, no record has
// arrived for batchGap, or it holds BatchSize records.
func (t *Trail) linger(batch []*pending) []*pending {
	deadline := time.Now().Add(t.cfg.BatchWait)
	timer := time.NewTimer(min(t.gap, t.cfg.BatchWait))
	defer timer.Stop()

	for len(batch) < t.cfg.BatchSize {
		select {
		case p, ok := <-t.queue:
			if !ok {
				return batch // the next receive in run gets the closed queue
			}
			batch = t.drain(append(batch, p))
			left := time.Until(deadline)
			if left <= 0 {
				return batch
			}
			timer.Reset(min(t.gap, left))
		case <-timer.C:
			return batch
		}
	}
	return batch
}

// drain adds every record already queued to batch, up to BatchSize, without waiting.
func (t *Trail) drain(batch []*pending) []*pending {
	for len(batch) < t.cfg.BatchSize {
		select {
		case p, ok := <-t.queue:
			if !ok {
				return batch // the next receive in run gets the closed queue
			}
			batch = append(batch, p)
		default:
			return batch
		}
	}
	return batch
}

// commit writes the batch (see write) and returns the result to every caller.
func (t *Trail) commit(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.WriteTimeout)
	defer cancel()

	t.records = t.records[:0]
	for _, p := range batch {
		t.records = append(t.records, p.record)
	}
	err := t.write(ctx, t.records, batch[0].enqueued)
	clear(t.records) // drop the batch's strings until the next one
	t.answer(batch, err)
}

// write chains batch onto the end of the chain, adds a checkpoint when one is due and
// writes both in one commit (writeNewChainIfCut), then records for Healthy whether the
// write failed. enqueued is when the batch's first record arrived. The caller holds
// writeMu.
func (t *Trail) write(ctx context.Context, batch []Record, enqueued time.Time) error {
	err := t.writeNewChainIfCut(ctx, batch, enqueued)
	if err != nil {
		t.failedAt.Store(time.Now().UnixNano())
	} else if t.failedAt.Load() != 0 {
		t.failedAt.Store(0)
	}
	return err
}

// UnhealthyFor is how long Healthy reports a failed write of records when no write has
// succeeded since. A kmsd that its load balancer took out of service receives no calls,
// so its trail writes nothing that could succeed: after this time, /readyz lets calls in
// again to find out whether the trail works.
const UnhealthyFor = 10 * time.Second

// Healthy returns an error when the last write of records failed less than UnhealthyFor
// ago, and nil otherwise. It is safe for concurrent use.
func (t *Trail) Healthy() error {
	failed := t.failedAt.Load()
	if failed == 0 {
		return nil
	}
	if since := time.Since(time.Unix(0, failed)); since < UnhealthyFor {
		return fmt.Errorf("the last write of audit records failed %s ago",
			since.Round(time.Millisecond))
	}
	return nil
}

// writeNewChainIfCut writes batch as write describes. When another program cut the chain
// file short (store.ErrChainFileCut), the lines from the cut on are lost and the store
// appends nothing more to it. The trail then starts a new chain and writes the batch
// there, so that the records that follow stay readable. Verification reports the cut
// chain.
func (t *Trail) writeNewChainIfCut(ctx context.Context, batch []Record, enqueued time.Time) error {
	err := t.writeOnce(ctx, batch, enqueued)
	if !errors.Is(err, store.ErrChainFileCut) {
		return err
	}

	cutID := t.chainID
	chainID, newErr := newChainID()
	if newErr == nil {
		newErr = t.store.CreateAuditChain(ctx, store.AuditChain{ID: chainID, Host: t.cfg.Host})
	}
	if newErr != nil {
		t.log.Error("starting a new audit chain after a cut chain file failed",
			"chain_id", cutID, "error", newErr)
		return err
	}
	t.log.Error("audit chain file cut short by another program; its records from the cut "+
		"on are lost, and the trail goes on in a new chain", "chain_id", cutID,
		"new_chain_id", chainID)
	t.chainID = chainID
	t.lastSeq, t.lastHash, t.lastSigned, t.unsigned, t.resync = 0, nil, 0, 0, false
	return t.writeOnce(ctx, batch, enqueued)
}

// writeOnce is one try of write on the current chain.
func (t *Trail) writeOnce(ctx context.Context, batch []Record, enqueued time.Time) error {
	if err := t.resyncIfNeeded(ctx); err != nil {
		return err
	}

	records := t.stored[:0]
	seq, prev := t.lastSeq, t.lastHash
	for _, r := range batch {
		seq++
		records = append(records, storedRecord(t.chainID, seq, prev, r))
		prev = records[len(records)-1].Hash
	}
	t.stored = records
	defer clear(records)

	now := time.Now()
	unsignedSince := t.oldestUnsignedAt
	if t.unsigned == 0 {
		unsignedSince = enqueued
	}
	var checkpoints []store.AuditCheckpoint
	if t.unsigned+len(batch) >= t.cfg.CheckpointRecords ||
		now.Sub(unsignedSince) >= t.cfg.CheckpointInterval {
		signCtx, cancel := context.WithTimeout(ctx, t.cfg.WriteTimeout)
		cp, err := t.sign(signCtx, seq, prev)
		cancel()
		if err == nil {
			checkpoints = append(checkpoints, cp)
		}
	}

	if err := t.store.AppendAudit(ctx, records, checkpoints); err != nil {
		if errors.Is(err, store.ErrChainFileCut) {
			return err // write starts a new chain
		}
		t.resync = true
		t.lastBatch = 0
		t.writeFailed(len(batch), err)
		return fmt.Errorf("write audit batch: %w", err)
	}
	if t.writeFailures > 0 {
		t.log.Info("audit batch written again", "chain_id", t.chainID,
			"first_seq", t.lastSeq+1, "failures_in_a_row", t.writeFailures)
		t.writeFailures = 0
	}

	t.lastSeq, t.lastHash = seq, prev
	if len(checkpoints) > 0 {
		t.lastSigned = seq
		t.unsigned = 0
	} else {
		t.unsigned += len(batch)
		t.oldestUnsignedAt = unsignedSince
	}
	t.lastBatch = len(batch)
	// Observed before the callers return, so that what a caller sees includes its batch.
	t.cfg.Observer.ObserveBatch(len(batch), time.Since(enqueued))
	return nil
}

// writeFailed counts and logs a failed write of a batch of n records. While the store is
// down every batch fails, so it logs the first failure and every 1000th, so that the log
// does not fill the disk the store may be missing.
//
// When the chain file cannot be written (store.ErrChainFileNotWritable), the first failure
// signs the end of the chain, which the store then keeps apart from the file. The log
// line gives the last record written to the chain and the last record that a checkpoint
// signs. The records of the failed calls are not in the chain.
func (t *Trail) writeFailed(n int, err error) {
	t.writeFailures++
	if (t.writeFailures-1)%1000 != 0 {
		return
	}
	if !errors.Is(err, store.ErrChainFileNotWritable) {
		t.log.Error("audit batch write failed; its calls fail", "chain_id", t.chainID,
			"first_seq", t.lastSeq+1, "records", n, "failures_in_a_row", t.writeFailures,
			"error", err)
		return
	}

	if t.writeFailures == 1 {
		t.writeCheckpoint(time.Now(), false)
	}
	t.log.Error("audit chain file cannot be written; calls fail with 503 until it can, and "+
		"their records are not in the chain", "chain_id", t.chainID,
		"written_through", t.lastSeq, "signed_through", t.lastSigned, "failed_records", n,
		"failures_in_a_row", t.writeFailures, "error", err)
}

func (t *Trail) answer(batch []*pending, err error) {
	for _, p := range batch {
		p.done <- err
	}
}

// resyncIfNeeded rereads the end of the chain after a failed write. A commit that
// reported an error may still have succeeded (a connection lost after COMMIT), and the
// next batch must continue from what the store holds.
func (t *Trail) resyncIfNeeded(ctx context.Context) error {
	if !t.resync {
		return nil
	}

	last, err := t.store.LastAuditRecord(ctx, t.chainID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		t.lastSeq, t.lastHash = 0, nil
	case err != nil:
		return fmt.Errorf("reread the end of audit chain %s: %w", t.chainID, err)
	default:
		t.lastSeq, t.lastHash = last.Seq, last.Hash
	}

	// Whether the failed batch carried a checkpoint is unknown, so sign the next one,
	// unless the chain ends at the last record signed.
	t.unsigned = 0
	if t.lastSeq > t.lastSigned {
		t.unsigned = t.cfg.CheckpointRecords
	}
	t.oldestUnsignedAt = time.Now()
	t.resync = false
	if t.writeFailures <= 1 {
		t.log.Info("audit chain resynchronised after a failed write", "chain_id", t.chainID,
			"last_seq", t.lastSeq)
	}
	return nil
}

// writeCheckpoint signs the end of the chain and stores the checkpoint alone, when
// records are not yet covered by one. final marks the checkpoint written by Close.
func (t *Trail) writeCheckpoint(now time.Time, final bool) {
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.WriteTimeout)
	defer cancel()

	if err := t.resyncIfNeeded(ctx); err != nil {
		t.log.Error("audit checkpoint skipped", "chain_id", t.chainID, "error", err)
		return
	}
	if t.unsigned == 0 {
		return
	}

	cp, err := t.sign(ctx, t.lastSeq, t.lastHash)
	if err != nil {
		return
	}
	if err := t.store.AppendAudit(ctx, nil, []store.AuditCheckpoint{cp}); err != nil {
		if final {
			t.log.Error("final audit checkpoint write failed; the chain ends unsigned after "+
				"its last checkpoint", "chain_id", t.chainID, "seq", cp.Seq,
				"signed_through", t.lastSigned, "error", err)
			return
		}
		t.log.Error("audit checkpoint write failed; retrying with the next batch or tick",
			"chain_id", t.chainID, "seq", cp.Seq, "error", err)
		return
	}
	t.lastSigned = cp.Seq
	t.unsigned = 0
	t.oldestUnsignedAt = now
}

// sign returns the checkpoint of record seq. A failure is logged and returned; the
// records stay unsigned until a later checkpoint covers them.
func (t *Trail) sign(ctx context.Context, seq uint64, recordHash []byte) (store.AuditCheckpoint, error) {
	_, err := t.PublicKey(ctx) // makes sure the key pair exists
	var signature []byte
	if err == nil {
		signature, err = t.signer.Sign(ctx, SigningKey, CheckpointDigest(t.chainID, seq, recordHash))
	}
	if err != nil {
		// A due checkpoint is tried again with every batch, so while the token is away
		// this fails once per request: log the first failure and every 1000th.
		if t.signFailures%1000 == 0 {
			t.log.Error("audit checkpoint signature failed; records stay unsigned until the next one",
				"chain_id", t.chainID, "seq", seq, "failures_in_a_row", t.signFailures+1, "error", err)
		}
		t.signFailures++
		return store.AuditCheckpoint{}, fmt.Errorf("sign audit checkpoint %d: %w", seq, err)
	}
	if t.signFailures > 0 {
		t.log.Info("audit checkpoint signed again", "chain_id", t.chainID, "seq", seq,
			"failures_in_a_row", t.signFailures)
		t.signFailures = 0
	}
	return store.AuditCheckpoint{
		ChainID: t.chainID, Seq: seq, RecordHash: recordHash, Signature: signature,
	}, nil
}

// storedRecord places r at seq in the chain, after the record whose hash is prev.
func storedRecord(chainID string, seq uint64, prev []byte, r Record) store.AuditRecord {
	at := r.Time
	if at.IsZero() {
		at = time.Now()
	}

	// Fields from the request (the sequence, a forwarded address, a key id) may hold
	// invalid UTF-8, which JSON cannot carry, so exports and chain files would read back
	// other bytes than the hash covers. They may also hold NUL, which PostgreSQL cannot
	// store in text, so that one such request would fail the whole batch of records with
	// it. So the record keeps U+FFFD in place of each invalid byte and each NUL.
	s := store.AuditRecord{
		ChainID:    chainID,
		Seq:        seq,
		Time:       at.UTC().Truncate(time.Millisecond),
		RequestID:  storableText(r.RequestID),
		AccessKey:  storableText(r.AccessKey),
		UserID:     storableText(r.UserID),
		ProjectID:  storableText(r.ProjectID),
		SourceIP:   storableText(r.SourceIP),
		Operation:  storableText(r.Operation),
		KeyID:      storableText(r.KeyID),
		KeyVersion: r.KeyVersion,
		GrantID:    storableText(r.GrantID),
		Status:     r.Status,
		ErrorCode:  storableText(r.ErrorCode),
		Sequence:   storableText(r.Sequence),
		PrevHash:   prev,
	}
	s.Hash = RecordHash(s)
	return s
}

// storableText returns s with each invalid UTF-8 byte and each NUL replaced by U+FFFD,
// as encoding/json writes an invalid byte, and s itself when it has neither.
func storableText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == 0 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
