package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hsmkms/kms/service"
)

// finalFlushTimeout bounds the seal count flush at shutdown.
const finalFlushTimeout = 5 * time.Second

// startJobs runs the background jobs (reconciliation, key deletion, scheduled rotation
// and the seal count flush; see service.RunJobs) every cfg.JobInterval until ctx is done.
// The first round runs one interval after the start. It returns a function that stops
// the jobs, waits for a running round to finish, and flushes the seal counts one last
// time. Every replica runs the jobs; the store's per-key job lock keeps two replicas off
// the same key.
func startJobs(ctx context.Context, cfg config, svc *service.Service, log *slog.Logger) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup

	wg.Go(func() {
		ticker := time.NewTicker(cfg.JobInterval)
		defer ticker.Stop()

		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}

			if err := svc.RunJobs(ctx); err != nil && ctx.Err() == nil {
				log.Warn("background jobs failed; the next round retries", "error", err,
					"interval", cfg.JobInterval.String())
			}
		}
	})
	log.Info("background jobs started", "interval", cfg.JobInterval.String())

	return func() {
		cancel()
		wg.Wait()

		flushCtx, cancelFlush := context.WithTimeout(context.Background(), finalFlushTimeout)
		defer cancelFlush()
		if err := svc.FlushSealCounts(flushCtx); err != nil {
			log.Warn("flushing seal counts at shutdown failed; the stored counts are low "+
				"by the seals of the last interval", "error", err)
		}
		log.Info("background jobs stopped")
	}
}
