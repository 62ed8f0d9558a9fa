package main

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
)

// openAudit returns the recorder of the audit trail and a function that flushes and
// stops it on shutdown. With auditing on, every start writes a new chain (see
// audit.Trail) and the group-commit metrics are registered on registry. With auditing
// off, the recorder keeps nothing and the admin audit routes are disabled.
func openAudit(
	ctx context.Context,
	cfg config,
	token hsm.Token,
	st store.Store,
	registry prometheus.Registerer,
	clients func() int,
	log *slog.Logger,
) (audit.Recorder, func(), error) {
	if !cfg.Audit {
		log.Warn("audit trail is off: API calls are not recorded")
		return audit.Discard{}, func() {}, nil
	}

	if sqlStore, ok := st.(*store.SQLStore); ok {
		sqlStore.SetAuditFsync(cfg.AuditFsync)
	}

	observer, err := audit.NewBatchMetrics(registry)
	if err != nil {
		return nil, nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		log.Warn("host name unknown; the audit chain is stored without it", "error", err)
	}

	trail, err := audit.Open(ctx, st, token, audit.Config{
		BatchSize:          cfg.AuditBatchSize,
		MaxDelay:           cfg.AuditMaxDelay,
		BatchWait:          batchWait(cfg.AuditBatchWait),
		CheckpointRecords:  cfg.AuditCheckpointRecords,
		CheckpointInterval: cfg.AuditCheckpointInterval,
		Host:               host,
		Logger:             log,
		Observer:           observer,
		Clients:            clients,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open audit trail: %w", err)
	}

	stop := func() { closeLogged(log, "audit trail", trail.Close) }
	return trail, stop, nil
}

// batchWait maps the configured wait to audit.Config.BatchWait, where zero selects the
// default and a negative value turns the wait off.
func batchWait(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// auditRoutes returns what the admin audit routes read, or nils (routes disabled) when
// recorder is not a trail.
func auditRoutes(
	recorder audit.Recorder,
	st store.Store,
) (audit.Source, func(context.Context) (*ecdsa.PublicKey, error)) {
	trail, ok := recorder.(*audit.Trail)
	if !ok {
		return nil, nil
	}
	return st, trail.PublicKey
}
