// Command kmsd is the key management server. With no flags it runs the embedded
// default: a SoftHSM2 token and a SQLite file in ./kms-data, serving on 127.0.0.1:8080.
// See README.md for every setting.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service/api"
	"github.com/hsmkms/kms/service/store"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

func main() {
	// First of all, because a successful exec starts the process over.
	execErr := execWithMallocTunables(os.Environ(), os.LookupEnv)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, execErr))
}

// run starts kmsd and blocks until SIGINT or SIGTERM. It returns the exit status. With
// -h or --help it writes the usage to stdout and returns 0 without starting. execErr is
// the error of execWithMallocTunables, logged once the logger exists.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, execErr error) int {
	// The flag package writes the usage for -h and --help, and an error message with the
	// usage for an invalid flag. Only the first goes to stdout.
	var flagOutput bytes.Buffer
	cfg, err := loadConfig(args, getenv, &flagOutput)
	if errors.Is(err, flag.ErrHelp) {
		_, _ = stdout.Write(flagOutput.Bytes())
		return 0
	}
	_, _ = stderr.Write(flagOutput.Bytes())
	if err != nil {
		fmt.Fprintf(stderr, "kmsd: invalid configuration: %v\n", err)
		return 2
	}

	tuneGC()
	log := newLogger(cfg, stderr)
	logMallocTunables(log, getenv, execErr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default action, so that a second SIGINT or
		// SIGTERM ends a shutdown that takes too long.
		<-ctx.Done()
		stop()
	}()

	if err := serve(ctx, cfg, getenv, log); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// SIGINT or SIGTERM during start-up cancelled the step in progress: a stop
			// that was requested, not a failure.
			log.Info("kmsd stopped during start-up", "step", err.Error())
			return 0
		}
		log.Error("kmsd stopped with an error", "error", err)
		return 1
	}
	log.Info("kmsd stopped")
	return 0
}

// logMallocTunables logs whether kmsd runs with mallocTunables, given the error of
// execWithMallocTunables.
func logMallocTunables(log *slog.Logger, getenv func(string) string, execErr error) {
	tunables := getenv("GLIBC_TUNABLES")
	switch {
	case errors.Is(execErr, errSecureExecution):
		log.Info("running with glibc's default malloc settings", "reason", execErr.Error())
	case execErr != nil:
		log.Warn("running with glibc's default malloc settings", "error", execErr)
	case mallocTunables == "":
		// Outside Linux kmsd sets no tunables, so there is nothing to report.
	case tunables == mallocTunables:
		log.Info("glibc malloc tunables set", "glibc_tunables", tunables)
	default:
		log.Info("GLIBC_TUNABLES kept as the environment sets it, without kmsd's value",
			"glibc_tunables", tunables, "kmsd_value", mallocTunables)
	}
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config.validate
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve opens the token and the store, builds the service and serves HTTP until ctx is
// done, then shuts down in order: stop accepting, finish in-flight requests within
// ShutdownTimeout, flush the audit trail, then close the store and the token (which
// closes its sessions and finalises the PKCS#11 library).
//
// A token that is missing or unusable at start does not stop serve: kmsd serves, /readyz
// and KMS calls answer 503, and the admin credential is created in the background once
// the token is back. A wrong PIN, a module path that is not a PKCS#11 library, or an
// embedded token that the data directory held before and lost (softhsmsetup.Ensure) does.
// So does a SQLite store that another process holds open for writing (an error wrapping
// store.ErrStoreInUse), before serve touches the token or listens.
func serve(ctx context.Context, cfg config, getenv func(string) string, log *slog.Logger) error {
	log.Info("kmsd starting", cfg.logValues()...)
	for _, msg := range cfg.warnings() {
		log.Warn("risky setting: " + msg)
	}

	// The embedded token creates the data directory, but with another module it holds
	// only the SQLite file and the admin credential file.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating the data directory: %w", err)
	}
	warnOpenFileModes(cfg, log)

	// Two stores must not share the embedded token and the admin credentials file of one
	// data directory, so this comes before anything else in it.
	releaseDataDir, err := lockDataDir(cfg.DataDir, store.IsPostgresURL(cfg.DatabaseURL))
	if err != nil {
		return err
	}
	defer closeLogged(log, "data directory lock", releaseDataDir)

	// Two kmsd processes on one SQLite file would both append to its audit chain files
	// and run its jobs, and the second would log in to the first one's embedded token.
	// So the store's lock is taken before the token is set up, and released last.
	storeLock, err := store.LockSQLite(cfg.DatabaseURL)
	if errors.Is(err, store.ErrStoreInUse) {
		return fmt.Errorf("locking the metadata store: %w; stop that process first, or give "+
			"this kmsd another --data-dir or --database", err)
	}
	if err != nil {
		return fmt.Errorf("locking the metadata store: %w", err)
	}
	defer closeLogged(log, "store lock", storeLock.Release)

	if cfg.PprofListen != "" {
		stopPprof, err := startPprof(cfg.PprofListen, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	hsmCfg, err := tokenConfig(cfg, getenv, log)
	if err != nil {
		return err
	}
	tokenCalls := hsmCfg.MaxConcurrentCalls
	if tokenCalls == 0 {
		tokenCalls = cfg.MaxSessions // hsm's default: one call per session
	}
	procs := addTokenProcs(tokenCalls, getenv)
	governed := getenv("GOMAXPROCS") == "" && procs > 1
	log.Info("Go processors set", "gomaxprocs", procs, "token_calls", tokenCalls,
		"one_while_idle", governed)
	module, err := hsm.Open(ctx, hsmCfg, log)
	if err != nil {
		return fmt.Errorf("opening the PKCS#11 token: %w", err)
	}
	defer closeLogged(log, "token", module.Close)

	registry, err := newRegistry(module)
	if err != nil {
		return err
	}
	metered, err := hsm.NewMeteredToken(module, registry)
	if err != nil {
		return err
	}
	var token hsm.Token = metered
	if cfg.PKCS11Module == "" {
		token = newTokenSpace(metered, filepath.Join(cfg.DataDir, "tokens"))
	}

	// The store and the token can be unavailable at start, so everything that needs them
	// starts in the background while HTTP already serves /healthz, /readyz and /metrics.
	sw := &handlerSwitch{}
	state := &startState{}
	sw.set(startingHandler(registry, token, state, cfg.MetricsListen == ""))
	if cfg.MetricsListen != "" && cfg.MetricsListen != "off" {
		stopMetrics, err := serveMetrics(cfg.MetricsListen, registry, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}

	startCtx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	svcs := &services{}
	clients := &connCounter{}
	startErr := make(chan error, 1)
	go func() {
		startErr <- startServices(startCtx, components{
			cfg: cfg, getenv: getenv, log: log, registry: registry, token: token,
			pin: module, clients: clients, state: state, storeLock: storeLock,
		}, sw, svcs)
	}()

	var handler http.Handler = sw
	if governed {
		governor := newProcGovernor(procs, log)
		handler = governor.handler(sw)
		governorCtx, stopGovernor := context.WithCancel(ctx)
		governorDone := make(chan struct{})
		go func() {
			defer close(governorDone)
			governor.run(governorCtx)
		}()
		defer func() {
			stopGovernor()
			<-governorDone
		}()
	}

	err = listenAndServe(ctx, cfg, handler, clients, startErr, log)

	// Stop start-up and wait for it, then stop what it started and close the store,
	// before the deferred close of the token.
	cancelStart()
	if e := <-startErr; e != nil && err == nil && !errors.Is(e, context.Canceled) {
		err = e
	}
	svcs.stop()

	return err
}

// newRegistry returns the Prometheus registry of one serve call, holding the Go runtime
// and process metrics and the session pool metrics of module. Each call has its own
// registry, so serve can run more than once in a process.
func newRegistry(module *hsm.Module) (*prometheus.Registry, error) {
	registry := prometheus.NewRegistry()

	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := registry.Register(c); err != nil {
			return nil, fmt.Errorf("register runtime metrics: %w", err)
		}
	}
	if err := hsm.RegisterStats(registry, module); err != nil {
		return nil, err
	}

	return registry, nil
}

// tokenConfig returns the token settings: the embedded SoftHSM2 token in the data
// directory when no module is configured, else the configured module with its PIN from
// KMS_PIN or the PIN file. Setting both KMS_PIN and a PIN file is an error.
func tokenConfig(cfg config, getenv func(string) string, log *slog.Logger) (hsm.Config, error) {
	hc := hsm.Config{
		ModulePath:         cfg.PKCS11Module,
		TokenLabel:         cfg.TokenLabel,
		MaxSessions:        cfg.MaxSessions,
		MaxConcurrentCalls: cfg.MaxTokenCalls,
		TokenGeneratesIV:   cfg.HSMGeneratesIV,
		SessionIdleTimeout: cfg.SessionIdleTimeout,
	}

	pinFile := cfg.PINFile
	if cfg.PKCS11Module == "" {
		setup, err := softhsmsetup.Ensure(cfg.DataDir, cfg.TokenLabel)
		if err != nil {
			return hsm.Config{}, fmt.Errorf("setting up the embedded SoftHSM2 token: %w", err)
		}
		if setup.RemovedStaging != "" {
			log.Info("removed the staging token directory of a first start that did not "+
				"finish; it held no live token", "path", setup.RemovedStaging)
		}
		for _, path := range setup.RestoredFiles {
			log.Warn("token file was cut short, as a kill or power loss while SoftHSM2 "+
				"rewrote it leaves it, and was restored from its copy", "path", path)
		}
		hc.ModulePath = setup.ModulePath
		if hc.MaxConcurrentCalls == 0 {
			hc.MaxConcurrentCalls = 1 // see hsm.Config.MaxConcurrentCalls
		}
		if pinFile == "" {
			pinFile = setup.PINFile
		}
	}

	pin := getenv("KMS_PIN")
	if pin != "" && cfg.PINFile != "" {
		// Either one could be the stale one, so kmsd does not pick.
		return hsm.Config{}, errors.New("both KMS_PIN and a PIN file (--pin-file, " +
			"KMS_PIN_FILE or pin_file) are set: unset one of them")
	}
	if pin == "" {
		if pinFile == "" {
			return hsm.Config{}, errors.New("no user PIN: set KMS_PIN or --pin-file")
		}
		b, err := os.ReadFile(pinFile)
		if err != nil {
			return hsm.Config{}, fmt.Errorf("reading the PIN file: %w", err)
		}
		pin = strings.TrimSpace(string(b))
		if pin == "" {
			return hsm.Config{}, fmt.Errorf("the PIN file %s is empty", pinFile)
		}
	}
	hc.PIN = pin
	return hc, nil
}

// listenAndServe serves h until ctx is done or start-up fails (an error on startErr),
// then stops accepting and waits up to cfg.ShutdownTimeout for in-flight requests. A
// start-up error is put back on startErr for the caller.
func listenAndServe(
	ctx context.Context,
	cfg config,
	h http.Handler,
	clients *connCounter,
	startErr chan error,
	log *slog.Logger,
) error {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}

	// ReadTimeout ends before WriteTimeout, so that a request whose body is still
	// arriving when it passes gets a 408 response instead of a closed connection.
	// WriteTimeout, counted from the end of the headers, leaves room for the longest call
	// that still gets a response: its body and work within maxRequestTimeout (the
	// body's ReadTimeout is shorter), then up to 20 s for its audit record.
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       20 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          api.NewServerErrorLog(log),
		TLSConfig:         tlsConfig(),
		ConnState:         clients.track,
	}

	// See plainconn.go: over plain HTTP, requests that net/http cannot parse get the
	// API's JSON errors.
	if cfg.TLSCert == "" {
		ln = plainListener{ln}
	}
	hs.Handler = checkFraming(h)

	// See hangups.go: the per-request read that notices a client hanging up is skipped
	// where no wait in a request depends on the network.
	skipHangups := skipsHangupRead(cfg)
	if skipHangups {
		hs.Handler = skipHangupRead(hs.Handler)
		hs.ConnContext = plainConnContext
	}

	served := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			served <- hs.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
			return
		}
		served <- hs.Serve(ln)
	}()
	log.Info("kmsd serving", "address", ln.Addr().String(), "tls", cfg.TLSCert != "",
		"watch_hangups", !skipHangups)

	select {
	case err := <-served:
		return fmt.Errorf("serving HTTP: %w", err)
	case err := <-startErr:
		startErr <- nil
		if err != nil {
			log.Error("start-up failed, stopping", "error", err)
			_ = hs.Close()
			return err
		}
		// Start-up finished: serve until ctx is done.
		select {
		case err := <-served:
			return fmt.Errorf("serving HTTP: %w", err)
		case <-ctx.Done():
		}
	case <-ctx.Done():
	}

	log.Info("kmsd stopping: finishing in-flight requests", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		log.Warn("in-flight requests did not finish in time", "error", err)
		_ = hs.Close()
	}
	log.Info("HTTP server stopped")
	return nil
}

func closeLogged(log *slog.Logger, what string, close func() error) {
	if err := close(); err != nil {
		log.Warn("closing failed", "component", what, "error", err)
	}
}
