package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/api"
	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

// Retry delays of the start-up steps that need the token. The delay doubles after each
// failure up to startMaxDelay, which is above hsm.DefaultReconnectInterval so that
// retries do not outpace the token's own reconnect attempts.
const (
	startFirstDelay = 500 * time.Millisecond
	startMaxDelay   = 5 * time.Second
)

// handlerSwitch is the HTTP handler of kmsd: the starting handler until the service is
// built, then the API server. Swapping is safe while requests are served.
type handlerSwitch struct {
	current atomic.Pointer[http.Handler]
}

func (s *handlerSwitch) set(h http.Handler) { s.current.Store(&h) }

func (s *handlerSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.current.Load()).ServeHTTP(w, r)
}

// reasonTokenMismatch is the /readyz reason while the token does not match the store.
const reasonTokenMismatch = "token does not match the store"

// startState holds the conditions that start-up waits for, which /readyz reports.
type startState struct {
	// storeDown is set while the metadata store is unavailable at start.
	storeDown atomic.Bool
	// tokenMismatch is set while the token does not match the store.
	tokenMismatch atomic.Bool
}

// startingHandler serves while the store or the token is not usable yet. /healthz
// returns 200, and /readyz returns 503 with the reason "store unavailable", "token
// unavailable", reasonTokenMismatch or "starting". /metrics serves registry, and every
// other path returns 503 with the retryable KMS.0102 error body.
func startingHandler(
	registry *prometheus.Registry, token hsm.Token, state *startState, metricsHere bool,
) http.Handler {
	mux := http.NewServeMux()

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		reason := api.ErrStarting.Error()
		if state.storeDown.Load() {
			reason = api.ErrStoreNotReady.Error()
		} else if err := token.Ping(r.Context()); err != nil {
			reason = api.ErrTokenNotReady.Error()
		} else if state.tokenMismatch.Load() {
			reason = reasonTokenMismatch
		}
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable,
			map[string]string{"status": "not ready", "reason": reason})
	})
	if metricsHere {
		mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		msg := "the service is starting; retry later"
		switch {
		case state.storeDown.Load():
			msg = "the service is starting: the metadata store is unavailable; retry later"
		case state.tokenMismatch.Load():
			msg = "the service is not ready: its token does not match its store; retry later"
		}
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]string{
			"error_code": service.CodeUnavailable,
			"error_msg":  msg,
		}})
	})

	// Every response carries X-Request-Id, as the API's responses do.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", api.NewRequestID())
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// services are the parts of kmsd built once the store and the token are usable.
type services struct {
	stopAudit  func()
	stopJobs   func()
	closeStore func()
	// removeMark removes this replica's mark in the data directory (markReplica).
	removeMark func()
}

// stop stops the jobs, flushes and stops the audit trail, then closes the store. It is
// safe on a zero services, whose parts were never started.
func (s *services) stop() {
	if s.stopJobs != nil {
		s.stopJobs()
	}
	if s.stopAudit != nil {
		s.stopAudit()
	}
	if s.closeStore != nil {
		s.closeStore()
	}
	if s.removeMark != nil {
		s.removeMark()
	}
}

// components are the parts that serve opened before start-up needs the token.
type components struct {
	cfg      config
	getenv   func(string) string
	log      *slog.Logger
	registry *prometheus.Registry
	token    hsm.Token
	// pin binds the token once it matches the store (hsm.Module.PinToken).
	pin tokenPinner
	// store is opened by startServices.
	store *store.SQLStore
	// storeLock is the lock of a SQLite file store, which serve holds (store.LockSQLite),
	// or nil.
	storeLock *store.FileLock
	// clients counts the open client connections of the API listener.
	clients *connCounter
	// state reports what start-up waits for, for /readyz.
	state *startState
}

// startServices waits until the token is usable and matches the store, then opens the
// audit trail, creates the first admin credential, builds the service and the API server
// and hands the server to sw. Waiting and the admin credential retry every failure until
// ctx is done. A failure to open the audit trail after a successful token ping is
// returned, and ends kmsd.
//
// NOTE: a token that goes away between the wait and opening the audit trail ends kmsd
// instead of being waited for again.
func startServices(ctx context.Context, c components, sw *handlerSwitch, svcs *services) error {
	st, err := openStore(ctx, c.cfg.DatabaseURL, c.storeLock, &c.state.storeDown, c.log)
	if err != nil {
		return err
	}
	svcs.closeStore = func() { closeLogged(c.log, "store", st.Close) }
	c.store = st

	if store.IsPostgresURL(c.cfg.DatabaseURL) {
		removeMark, err := markReplicaOfStore(ctx, st, c.cfg.DataDir, c.log)
		if err != nil {
			return err
		}
		svcs.removeMark = removeMark
	}

	if err := waitForToken(ctx, c.token, c.log); err != nil {
		return err
	}
	if c.cfg.PKCS11Module == "" {
		// The token has just logged in with the user PIN, so its token file is sound.
		if err := softhsmsetup.SaveTokenFiles(c.cfg.DataDir); err != nil {
			c.log.Warn("keeping a copy of the token file failed; a token file cut short "+
				"by a kill can then not be restored", "error", err)
		}
	}
	if err := waitForTokenForStore(ctx, c.token, c.pin, c.store, c.cfg.AcceptRestoredToken,
		&c.state.tokenMismatch, c.log); err != nil {
		return err
	}

	// Replicas started at one moment on a new store would otherwise each generate the
	// audit signing key and the credential sealing key under one label, and each create
	// its own first admin credential.
	unlockBootstrap, err := lockBootstrap(ctx, c.store, c.log)
	if err != nil {
		return err
	}
	recorder, stopAudit, err := openAudit(ctx, c.cfg, c.token, c.store, c.registry, c.clients.count, c.log)
	if err != nil {
		unlockBootstrap()
		return fmt.Errorf("opening the audit trail: %w", err)
	}
	svcs.stopAudit = stopAudit

	creds := auth.NewCredentials(c.store, c.token,
		auth.CredentialsConfig{CacheTTL: c.cfg.CredCacheTTL, Logger: c.log})
	admin, err := ensureAdmin(ctx, creds, c.cfg.DataDir, auth.AdminEnvFromGetenv(c.getenv), c.log)
	unlockBootstrap()
	if err != nil {
		return err
	}

	verifier := auth.NewVerifier(creds, auth.VerifierConfig{
		Window: c.cfg.AuthWindow, MaxFailures: c.cfg.AuthFailures,
		LockDuration: c.cfg.AuthLockout, Logger: c.log,
	})
	svc := service.New(c.token, c.store, c.log, service.Config{
		Region: c.cfg.Region, KeyCacheTTL: c.cfg.KeyCacheTTL, KeysPerProject: c.cfg.KeysPerProject,
		GrantsPerKey: c.cfg.GrantsPerKey, SealLimit: uint64(c.cfg.SealLimit),
		StaleVersionAge: c.cfg.StaleVersionAge, MaxOnDemandVersion: c.cfg.MaxOnDemandVersion,
	})
	httpMetrics, err := api.NewMetrics(c.registry, svc)
	if err != nil {
		return err
	}

	svcs.stopJobs = startJobs(ctx, c.cfg, svc, c.log)

	auditSource, auditKey := auditRoutes(recorder, c.store)
	// loadConfig rejects a list that does not parse, so this cannot fail.
	proxies, _ := parseTrustedProxies(c.cfg.TrustedProxies)
	if trustsEveryAddress(proxies) {
		c.log.Warn("trusted_proxies covers every IPv4 or every IPv6 address, so any client "+
			"can set the source address that the audit trail records through X-Forwarded-For",
			"trusted_proxies", c.cfg.TrustedProxies)
	}
	srv := api.New(svc, verifier, c.log, api.Config{
		MaxBodyBytes:   c.cfg.MaxBodyBytes,
		RequestTimeout: requestTimeout(c.cfg),
		TrustedProxies: proxies,
		Audit:          recorder,
		Credentials:    creds,
		// Admins of the bootstrap admin's project manage every project's credentials.
		OperatorProjectID: admin.ProjectID,
		AuditSource:       auditSource,
		AuditPublicKey:    auditKey,
		Metrics:           httpMetrics,
		MetricsElsewhere:  c.cfg.MetricsListen != "",
		Ready: func(ctx context.Context) error {
			if err := checkReady(ctx, c.token, c.store); err != nil {
				return err
			}
			if err := svc.TokenBehindStore(ctx); err != nil {
				return fmt.Errorf("%w: %w", api.ErrTokenBehind, err)
			}
			return checkAuditReady(recorder)
		},
	})
	sw.set(srv.Handler())
	c.log.Info("kmsd ready to serve the API")

	return nil
}

// checkReady returns nil when the token is usable and, for the embedded token, can store
// new keys, and the store responds and commits writes, else an error wrapping the api
// readiness category. The write check reuses its
// result for a second, so frequent probes add little load (store.SQLStore.CheckWrite).
func checkReady(ctx context.Context, token hsm.Token, st store.Store) error {
	if err := token.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", api.ErrTokenNotReady, err)
	}
	if w, ok := token.(writableChecker); ok {
		if err := w.CheckWritable(); err != nil {
			return fmt.Errorf("%w: %w", api.ErrTokenNotReady, err)
		}
	}
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", api.ErrStoreNotReady, err)
	}
	if err := st.CheckWrite(ctx); err != nil {
		return fmt.Errorf("%w: %w", api.ErrStoreNotReady, err)
	}

	return nil
}

// checkAuditReady returns an error wrapping api.ErrAuditNotReady while recorder reports a
// recent failed write (audit.Trail.Healthy). A recorder without that report is ready.
func checkAuditReady(recorder audit.Recorder) error {
	health, ok := recorder.(interface{ Healthy() error })
	if !ok {
		return nil
	}
	if err := health.Healthy(); err != nil {
		return fmt.Errorf("%w: %w", api.ErrAuditNotReady, err)
	}
	return nil
}

// openStore opens the metadata store at url with lock, the lock of a SQLite file store
// that the caller holds, or nil (store.OpenLocked). While the store is unavailable (a
// database that is down or unreachable), it sets down and tries again, so that a replica
// started during a database outage reports not ready and starts once the database is
// back. Other errors, such as an invalid URL, a rejected login, a database that does not
// exist, a failed migration or a SQLite store in use by another process
// (store.ErrStoreInUse), return at once, as does ctx's error.
func openStore(
	ctx context.Context, url string, lock *store.FileLock, down *atomic.Bool, log *slog.Logger,
) (*store.SQLStore, error) {
	var st *store.SQLStore
	var openErr error
	err := retry(ctx, func(attempt int) error {
		s, err := store.OpenLocked(ctx, url, lock, log)
		if err == nil || !errors.Is(err, store.ErrUnavailable) || store.LoginRejected(err) {
			st, openErr = s, err
			if err == nil && attempt > 1 {
				log.Info("metadata store available, starting the service", "attempts", attempt)
			}
			return nil
		}
		down.Store(true)
		if attempt == 1 {
			log.Warn("metadata store unavailable, waiting for it; the API returns 503 until "+
				"then", "error", err)
		}
		return err
	})
	down.Store(false)
	if err == nil {
		err = openErr
	}
	if err != nil {
		return nil, fmt.Errorf("opening the metadata store: %w", err)
	}
	return st, nil
}

// waitForToken returns once token.Ping succeeds, or with ctx's error. The Module logs
// why the token is unavailable once per change, so this logs only the start and the end
// of the wait.
func waitForToken(ctx context.Context, token hsm.Token, log *slog.Logger) error {
	return retry(ctx, func(attempt int) error {
		err := token.Ping(ctx)
		switch {
		case err == nil && attempt > 1:
			log.Info("token usable, starting the service", "attempts", attempt)
		case err != nil && attempt == 1:
			log.Warn("token unavailable, waiting for it; the API returns 503 until then",
				"error", err)
		}
		return err
	})
}

// errTokenMismatch means the token is not the one that served the store: it lacks the
// key that sealed the stored credentials, or it is an older copy of that token.
var errTokenMismatch = errors.New("the token does not match the store")

// checkTokenForStore returns an error wrapping errTokenMismatch when the token is not
// the one that served the store. checkSealingKeyForStore and service.CheckTokenCurrent
// tell why.
func checkTokenForStore(ctx context.Context, token hsm.Token, st store.Store) error {
	if err := checkSealingKeyForStore(ctx, token, st); err != nil {
		return err
	}

	err := service.CheckTokenCurrent(ctx, token, st, time.Now())
	var behind *service.TokenBehindError
	if errors.As(err, &behind) {
		return fmt.Errorf("%w: %w; start kmsd with the live token. Only if the live token is "+
			"lost and this one is restored from a backup, start kmsd once with "+
			"--accept-restored-token %s: the key versions created after the backup are then "+
			"marked lost", errTokenMismatch, err, behind.Missing)
	}
	return err
}

// checkSealingKeyForStore returns an error wrapping errTokenMismatch when the store holds
// credentials but the token has no auth.SealingKey, or one that does not open them.
// Serving would then fail every signed request, and generating a new sealing key would
// make the stored credentials unreadable for good. The check opens the sealed secret of
// one credential, so that another store's token, which holds a sealing key under the
// same reference, does not pass.
func checkSealingKeyForStore(ctx context.Context, token hsm.Token, st store.Store) error {
	credentials, err := st.ListCredentials(ctx)
	if err != nil {
		return fmt.Errorf("list credentials: %w", err)
	}
	if len(credentials) == 0 {
		return nil
	}

	exists, err := token.KeyExists(ctx, auth.SealingKey)
	if err != nil {
		return fmt.Errorf("look up the credential sealing key %s: %w", auth.SealingKey, err)
	}
	if !exists {
		return fmt.Errorf("%w: the store holds %d credentials sealed by the token key %s, "+
			"which the token lacks; start kmsd with the token that served this store",
			errTokenMismatch, len(credentials), auth.SealingKey)
	}

	// Another store's token holds a key under the same reference, so only opening a
	// sealed secret distinguishes the two.
	err = auth.CheckSealingKey(ctx, token, credentials[0])
	if errors.Is(err, auth.ErrSealingKeyMismatch) {
		return fmt.Errorf("%w: the token key %s does not open the store's credentials, so "+
			"it is another token's key; start kmsd with the token that served this store",
			errTokenMismatch, auth.SealingKey)
	}
	if err != nil {
		return fmt.Errorf("open a stored credential with the token key %s: %w",
			auth.SealingKey, err)
	}

	return nil
}

// tokenPinner binds a token connection to the token it reached (hsm.Module).
type tokenPinner interface {
	PinToken() error
	UnpinToken()
}

// checkAndPinToken checks the token against the store, pins it, and checks again, so
// that the token pinned is one that matched even if a reconnect came in between.
//
// A token older than the store passes when accept names its newest missing key version
// (the operator's --accept-restored-token): once the token is pinned, every key version
// it lacks is marked lost (service.MarkLostVersions). A leftover accept value names a
// version that is no longer missing, so it accepts nothing later; it is logged.
func checkAndPinToken(
	ctx context.Context, token hsm.Token, pin tokenPinner, st store.Store, accept string,
	log *slog.Logger,
) error {
	err := checkTokenForStore(ctx, token, st)
	acceptable := acceptsRestore(err, accept)
	var behind *service.TokenBehindError
	if accept != "" && !acceptable && errors.As(err, &behind) {
		return fmt.Errorf("%w (accept_restored_token is %s, not the missing version, so it "+
			"accepts nothing)", err, accept)
	}
	if err != nil && !acceptable {
		return err
	}
	if err := pin.PinToken(); err != nil {
		return err
	}

	err = checkTokenForStore(ctx, token, st)
	if err != nil && acceptsRestore(err, accept) {
		err = acceptRestoredToken(ctx, token, st, log)
	}
	if err != nil {
		pin.UnpinToken()
		return err
	}

	if accept != "" && !acceptable {
		log.Warn("accept_restored_token is set but the token contains every key version of "+
			"the store; remove the setting", "accept_restored_token", accept)
	}
	return nil
}

// acceptsRestore reports whether err is a token older than the store whose newest missing
// key version is accept.
func acceptsRestore(err error, accept string) bool {
	var behind *service.TokenBehindError
	return accept != "" && errors.As(err, &behind) && behind.Missing.String() == accept
}

// acceptRestoredToken marks the key versions that the pinned token lacks as lost and
// checks the token against the store again.
func acceptRestoredToken(ctx context.Context, token hsm.Token, st store.Store, log *slog.Logger) error {
	lost, err := service.MarkLostVersions(ctx, token, st, time.Now(), log)
	if err != nil {
		return fmt.Errorf("mark the key versions missing from the restored token lost: %w", err)
	}
	log.Warn("accepted a token restored from a backup; remove accept_restored_token",
		"lost_key_versions", lost)
	return checkTokenForStore(ctx, token, st)
}

// waitForTokenForStore returns once the token matches the store, and then pins it (see
// checkAndPinToken), or returns with ctx's error. It logs a mismatch once as an error and
// other failures once per message, because kmsd keeps checking: a token directory moved
// back in place fixes a mismatch.
func waitForTokenForStore(
	ctx context.Context, token hsm.Token, pin tokenPinner, st store.Store, accept string,
	mismatch *atomic.Bool, log *slog.Logger,
) error {
	lastMessage := ""
	return retry(ctx, func(attempt int) error {
		err := checkAndPinToken(ctx, token, pin, st, accept, log)
		mismatch.Store(errors.Is(err, errTokenMismatch))
		if err == nil {
			if attempt > 1 {
				log.Info("token matches the store, starting the service", "attempts", attempt)
			}
			return nil
		}

		if msg := err.Error(); msg != lastMessage {
			lastMessage = msg
			if errors.Is(err, errTokenMismatch) {
				log.Error("kmsd is not ready: the token does not match the store", "error", err)
			} else {
				log.Warn("checking the token against the store failed, retrying", "error", err,
					"attempt", attempt)
			}
		}
		return err
	})
}

// markReplicaOfStore reads the store's id, trying again while the store is unavailable,
// and marks the data directory as used by a replica of that store (markReplica).
func markReplicaOfStore(
	ctx context.Context, st *store.SQLStore, dataDir string, log *slog.Logger,
) (func(), error) {
	var id string
	err := retry(ctx, func(attempt int) error {
		var err error
		if id, err = st.StoreID(ctx); err != nil {
			log.Warn("reading the store id failed, retrying", "error", err, "attempt", attempt)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the store id: %w", err)
	}
	return markReplica(dataDir, id)
}

// lockBootstrap takes the store's first-start lock (store.SQLStore.LockBootstrap),
// trying again after each failure, such as an unavailable store, until ctx is done.
func lockBootstrap(ctx context.Context, st *store.SQLStore, log *slog.Logger) (func(), error) {
	var unlock func()
	lastMessage := ""
	err := retry(ctx, func(attempt int) error {
		var err error
		unlock, err = st.LockBootstrap(ctx)
		if err != nil {
			if msg := err.Error(); msg != lastMessage {
				lastMessage = msg
				log.Warn("taking the first-start lock of the store failed, retrying",
					"error", err, "attempt", attempt)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("taking the first-start lock of the store: %w", err)
	}
	return unlock, nil
}

// ensureAdmin creates the first admin credential, retrying failures, and returns the
// bootstrap admin credential. It logs the first failure and each change of its message,
// and the attempt count on success. An invalid credential in the environment (an error
// wrapping auth.ErrInvalidCredential) is returned at once, which ends kmsd.
func ensureAdmin(
	ctx context.Context, creds *auth.Credentials, dataDir string, env auth.AdminEnv,
	log *slog.Logger,
) (auth.Credential, error) {
	var admin auth.Credential
	var invalid error
	lastMessage := ""
	err := retry(ctx, func(attempt int) error {
		var err error
		admin, err = creds.EnsureAdmin(ctx, dataDir, env)
		if err == nil {
			log.Info("admin credential ready", "access_key", admin.AccessKey,
				"operator_project_id", admin.ProjectID, "attempts", attempt)
			return nil
		}
		if errors.Is(err, auth.ErrInvalidCredential) {
			// The settings are wrong, so trying again cannot succeed.
			invalid = err
			return nil
		}

		if msg := err.Error(); msg != lastMessage {
			lastMessage = msg
			log.Warn("creating the admin credential failed, retrying", "error", err,
				"attempt", attempt)
		}
		return err
	})
	if invalid != nil {
		return auth.Credential{}, fmt.Errorf("the admin credential of %s, %s and %s is "+
			"invalid: %w", auth.EnvAdminAccessKey, auth.EnvAdminSecretKey, auth.EnvProjectID,
			invalid)
	}
	return admin, err
}

// retry calls try until it returns nil, waiting startFirstDelay after the first failure
// and twice as long after each next one, up to startMaxDelay. It returns ctx's error
// when ctx ends first.
func retry(ctx context.Context, try func(attempt int) error) error {
	delay := startFirstDelay
	for attempt := 1; ; attempt++ {
		err := try(attempt)
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return errors.Join(ctxErr, err)
		}

		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, startMaxDelay)
	}
}

// requestTimeout returns the bound on each call's context (api.Config.RequestTimeout):
// cfg.RequestTimeout with PostgreSQL, and none with SQLite, where no wait of a call
// depends on the network and the timer would only add to every call's cost.
func requestTimeout(cfg config) time.Duration {
	if store.IsPostgresURL(cfg.DatabaseURL) {
		return cfg.RequestTimeout
	}
	return 0
}
