// Command kmsd is the key management server. With no flags it runs the embedded
// default: a SoftHSM2 token and a SQLite file in ./kms-data, serving on 127.0.0.1:8080.
// See README.md for every setting.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hsmkms/kms/hsm"
	"github.com/hsmkms/kms/service"
	"github.com/hsmkms/kms/service/api"
	"github.com/hsmkms/kms/service/auth"
	"github.com/hsmkms/kms/service/store"
	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run starts kmsd and blocks until SIGINT or SIGTERM. It returns the exit status.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "kmsd: invalid configuration: %v\n", err)
		return 2
	}

	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := serve(ctx, cfg, getenv, log); err != nil {
		log.Error("kmsd stopped with an error", "error", err)
		return 1
	}
	return 0
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
// ShutdownTimeout, then close the store and the token.
func serve(ctx context.Context, cfg config, getenv func(string) string, log *slog.Logger) error {
	log.Info("kmsd starting", cfg.logValues()...)

	hsmCfg, err := tokenConfig(cfg, getenv)
	if err != nil {
		return err
	}
	token, err := hsm.Open(ctx, hsmCfg, log)
	if err != nil {
		return fmt.Errorf("opening the PKCS#11 token: %w", err)
	}
	defer closeLogged(log, "token", token.Close)

	st, err := store.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return fmt.Errorf("opening the metadata store: %w", err)
	}
	defer closeLogged(log, "store", st.Close)

	creds := auth.NewCredentials(st, token, auth.CredentialsConfig{CacheTTL: cfg.CredCacheTTL, Logger: log})
	if err := bootstrapAdmin(ctx, creds, cfg, getenv, log); err != nil {
		return err
	}
	verifier := auth.NewVerifier(creds, auth.VerifierConfig{
		Window: cfg.AuthWindow, MaxFailures: cfg.AuthFailures, LockDuration: cfg.AuthLockout, Logger: log,
	})

	svc := service.New(token, st, log, service.Config{
		Region: cfg.Region, KeyCacheTTL: cfg.KeyCacheTTL, KeysPerProject: cfg.KeysPerProject,
	})

	recorder, stopAudit, err := openAudit(ctx, cfg, token, st, log)
	if err != nil {
		return fmt.Errorf("opening the audit trail: %w", err)
	}
	defer stopAudit()

	stopJobs := startJobs(ctx, cfg, svc, log)
	defer stopJobs()

	srv := api.New(svc, verifier, log, api.Config{
		MaxBodyBytes: cfg.MaxBodyBytes,
		Audit:        recorder,
		Credentials:  creds,
		Ready: func(ctx context.Context) error {
			if err := token.Ping(ctx); err != nil {
				return fmt.Errorf("token: %w", err)
			}
			if err := st.Ping(ctx); err != nil {
				return fmt.Errorf("store: %w", err)
			}
			return nil
		},
	})

	return listenAndServe(ctx, cfg, srv.Handler(), log)
}

// tokenConfig returns the token settings: the embedded SoftHSM2 token in the data
// directory when no module is configured, else the configured module with its PIN from
// KMS_PIN or the PIN file.
func tokenConfig(cfg config, getenv func(string) string) (hsm.Config, error) {
	hc := hsm.Config{
		ModulePath:       cfg.PKCS11Module,
		TokenLabel:       cfg.TokenLabel,
		MaxSessions:      cfg.MaxSessions,
		TokenGeneratesIV: cfg.HSMGeneratesIV,
	}

	pinFile := cfg.PINFile
	if cfg.PKCS11Module == "" {
		setup, err := softhsmsetup.Ensure(cfg.DataDir, cfg.TokenLabel)
		if err != nil {
			return hsm.Config{}, fmt.Errorf("setting up the embedded SoftHSM2 token: %w", err)
		}
		hc.ModulePath = setup.ModulePath
		if pinFile == "" {
			pinFile = setup.PINFile
		}
	}

	pin := getenv("KMS_PIN")
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

func bootstrapAdmin(ctx context.Context, creds *auth.Credentials, cfg config, getenv func(string) string, log *slog.Logger) error {
	admin, err := creds.EnsureAdmin(ctx, cfg.DataDir, auth.AdminEnvFromGetenv(getenv))
	if err != nil {
		return fmt.Errorf("creating the admin credential: %w", err)
	}
	log.Info("admin credential ready", "access_key", admin.AccessKey, "project_id", admin.ProjectID)
	return nil
}

func listenAndServe(ctx context.Context, cfg config, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}

	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	served := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			served <- hs.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
			return
		}
		served <- hs.Serve(ln)
	}()
	log.Info("kmsd serving", "address", ln.Addr().String(), "tls", cfg.TLSCert != "")

	select {
	case err := <-served:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}

	log.Info("kmsd stopping: finishing in-flight requests", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		log.Warn("in-flight requests did not finish in time", "error", err)
		_ = hs.Close()
	}
	log.Info("kmsd stopped")
	return nil
}

func closeLogged(log *slog.Logger, what string, close func() error) {
	if err := close(); err != nil {
		log.Warn("closing failed", "component", what, "error", err)
	}
}
