package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hsmkms/kms/service/audit"
	"github.com/hsmkms/kms/service/store"
)

// The audit commands read the trail through the admin audit routes of kmsd, which work
// against a remote kmsd with nothing but an admin credential and are themselves
// recorded. verify also reads an export file or the database directly (--database), so
// that an auditor needs neither a credential nor a running kmsd.

func init() {
	commands["audit"] = command{
		"audit export [--out FILE] [--database URL] | verify (--in FILE | --database URL) " +
			"--public-key FILE [--require-signed-tail] | public-key [--out FILE] | " +
			"tail [--interval DURATION]",
		runAudit,
	}
}

func runAudit(env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usageError{"audit needs export, verify, public-key or tail"}
	}
	sub, args := args[0], args[1:]
	if isHelpFlag(sub) {
		return helpRequest{}
	}

	switch sub {
	case "export":
		return runAuditExport(env, args)
	case "verify":
		return runAuditVerify(env, args)
	case "public-key":
		return runAuditPublicKey(env, args)
	case "tail":
		return runAuditTail(env, args)
	default:
		return usageError{fmt.Sprintf("unknown audit command %q", sub)}
	}
}

func runAuditExport(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	out := fs.String("out", "", "file to write the JSON lines to (default standard output)")
	database := fs.String("database", "", "read the store at this URL instead of calling kmsd")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}

	src, closeSource, err := auditSource(env, *database)
	if err != nil {
		return err
	}
	defer closeSource()

	if *out == "" {
		return audit.Export(context.Background(), src, env.stdout)
	}

	// A damaged chain file still leaves the other chains worth keeping: the file is
	// written with a "damaged" line in place of the rest of that chain, which fails
	// verification, and the command exits 1.
	var damaged error
	err = writeAtomically(*out, func(f *os.File) error {
		err := audit.Export(context.Background(), src, f)
		if errors.Is(err, audit.ErrVerification) {
			damaged, err = err, nil
		}
		return err
	})
	return errors.Join(err, damaged)
}

func runAuditVerify(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	in := fs.String("in", "", "export file to verify")
	database := fs.String("database", "", "store URL to verify directly")
	keyFile := fs.String("public-key", "", "PEM public key from kmsctl audit public-key")
	signedTail := fs.Bool("require-signed-tail", false,
		"also fail when records follow the last checkpoint of their chain")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if (*in == "") == (*database == "") || *keyFile == "" {
		return usageError{"give --public-key and exactly one of --in and --database"}
	}

	pem, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("read public key: %w", err)
	}
	key, err := audit.ParsePublicKey(pem)
	if err != nil {
		return err
	}

	report, err := verifyAuditInput(*in, *database, key)
	if errors.Is(err, audit.ErrVerification) {
		printReport(env.stdout, report) // the chains that hold
	}
	if err != nil {
		return err
	}

	printReport(env.stdout, report)
	if len(report.Chains) == 0 {
		return errors.New("found no audit chain to verify: check that --in or --database " +
			"names the trail of a kmsd that ran with auditing on")
	}
	if n := report.UnsignedRecords(); *signedTail && n > 0 {
		return fmt.Errorf("%d records follow the last checkpoint of their chain; "+
			"their removal could not be detected", n)
	}
	return nil
}

// verifyAuditInput verifies the export file at in, or else the store at databaseURL.
func verifyAuditInput(in, databaseURL string, key *ecdsa.PublicKey) (audit.Report, error) {
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			return audit.Report{}, fmt.Errorf("open export: %w", err)
		}
		defer f.Close()
		return audit.VerifyExport(f, key)
	}

	st, err := openStoreReadOnly(databaseURL)
	if err != nil {
		return audit.Report{}, err
	}
	defer st.Close()
	return audit.VerifySource(context.Background(), st, key)
}

func printReport(w io.Writer, report audit.Report) {
	for _, c := range report.Chains {
		fmt.Fprintf(w, "chain %s: %d records, %d checkpoints, last signed record %d, "+
			"%d unsigned at the end\n", c.ChainID, c.Records, c.Checkpoints, c.LastSigned,
			c.UnsignedTail)
	}
	fmt.Fprintf(w, "verified %d chains\n", len(report.Chains))
}

func runAuditPublicKey(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("audit public-key", flag.ContinueOnError)
	out := fs.String("out", "", "file to write the PEM key to (default standard output)")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	c, err := env.requireClient()
	if err != nil {
		return err
	}

	var answer struct {
		PublicKey string `json:"public_key"`
	}
	if err := c.call(http.MethodGet, "kms-admin/audit/public-key", nil, &answer); err != nil {
		return err
	}
	if _, err := audit.ParsePublicKey([]byte(answer.PublicKey)); err != nil {
		return fmt.Errorf("kmsd answered an invalid key: %w", err)
	}

	if *out == "" {
		_, err := io.WriteString(env.stdout, answer.PublicKey)
		return err
	}
	return writeAtomically(*out, func(f *os.File) error {
		_, err := f.WriteString(answer.PublicKey)
		return err
	})
}

// runAuditTail prints the records written from now on, as JSON lines, until interrupted.
func runAuditTail(env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("audit tail", flag.ContinueOnError)
	interval := fs.Duration("interval", time.Second, "how often to ask for new records")
	database := fs.String("database", "", "read the store at this URL instead of calling kmsd")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if *interval <= 0 {
		return usageError{"--interval must be positive"}
	}

	src, closeSource, err := auditSource(env, *database)
	if err != nil {
		return err
	}
	defer closeSource()

	// kmsd records the tail's own reads of the trail too. Printing them would make an
	// idle trail grow by the tail's polls and print them forever, so the tail skips the
	// records of its own requests, known by the X-Request-Id of each response.
	own := map[string]bool{}
	if c, ok := src.(auditClient); ok {
		c.c.onRequestID = func(id string) { own[id] = true }
	}
	skip := func(r store.AuditRecord) bool {
		if !own[r.RequestID] {
			return false
		}
		delete(own, r.RequestID)
		return true
	}

	return tailAudit(context.Background(), src, env.stdout, env.stderr, *interval, skip)
}

// tailAudit skips the records that exist when it starts, then polls src every interval
// and writes each new record for which skip returns false as a JSON line to w, until ctx
// ends. A poll that fails with a retryable error (kmsd's 503, an unavailable store) is
// reported once to errw and retried at the next interval, so no record is skipped.
func tailAudit(
	ctx context.Context,
	src audit.Source,
	w, errw io.Writer,
	interval time.Duration,
	skip func(store.AuditRecord) bool,
) error {
	positions := map[string]uint64{}
	damaged := map[string]bool{}
	if _, err := pollAudit(ctx, src, positions, damaged, nil, errw, skip); err != nil {
		return err
	}
	// Reading past a long trail takes seconds, and records written meanwhile are skipped
	// with it. The message marks where printing starts.
	fmt.Fprintln(errw, "kmsctl: following the audit trail; new records are printed from now on")

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}

		_, err := pollAudit(ctx, src, positions, damaged, w, errw, skip)
		switch {
		case err != nil && !retryableAuditError(err):
			return err
		case err != nil && !failing:
			fmt.Fprintf(errw, "kmsctl: reading the audit trail failed: %v; retrying every %s\n",
				err, interval)
			failing = true
		case err == nil && failing:
			fmt.Fprintln(errw, "kmsctl: the audit trail can be read again")
			failing = false
		}
	}
}

// retryableAuditError reports whether err may go away by itself: a 503 response from
// kmsd, or an unavailable store.
func retryableAuditError(err error) bool {
	var api *apiError
	if errors.As(err, &api) {
		return api.Status == http.StatusServiceUnavailable
	}
	return errors.Is(err, store.ErrUnavailable)
}

// pollAudit reads the records after positions of every chain, calls skip on each, writes
// those for which skip returns false to w unless w is nil, and advances positions. A
// chain that turns out damaged is reported once to errw, added to damaged and not read
// again, so that the other chains are still followed. It returns the number of records
// read.
func pollAudit(
	ctx context.Context,
	src audit.Source,
	positions map[string]uint64,
	damaged map[string]bool,
	w, errw io.Writer,
	skip func(store.AuditRecord) bool,
) (int, error) {
	chains, err := src.ListAuditChains(ctx)
	if err != nil {
		return 0, err
	}

	read := 0
	for _, c := range chains {
		for !damaged[c.ID] {
			records, err := src.ListAuditRecords(ctx, c.ID, positions[c.ID], 1000)
			if errors.Is(err, store.ErrChainFileDamaged) {
				fmt.Fprintf(errw, "kmsctl: skipping audit chain %s from now on: %v\n", c.ID, err)
				damaged[c.ID] = true
				break
			}
			if err != nil {
				return read, err
			}
			for _, r := range records {
				if !skip(r) && w != nil {
					if err := printJSONLine(w, audit.RecordLine(r)); err != nil {
						return read, err
					}
				}
				positions[c.ID] = r.Seq
			}
			read += len(records)
			if len(records) < 1000 {
				break
			}
		}
	}
	return read, nil
}

// auditSource returns the store at databaseURL when it is set, else kmsd's admin routes.
func auditSource(env *cliEnv, databaseURL string) (audit.Source, func(), error) {
	if databaseURL != "" {
		st, err := openStoreReadOnly(databaseURL)
		if err != nil {
			return nil, nil, err
		}
		return st, func() { st.Close() }, nil
	}

	c, err := env.requireClient()
	if err != nil {
		return nil, nil, err
	}
	return auditClient{c}, func() {}, nil
}

// openStoreReadOnly opens the store for reading. A SQLite URL without a mode parameter
// gets mode=ro, so that kmsctl changes neither the database nor its chain files. A
// PostgreSQL store still applies pending migrations, as every store.Open does, so point
// it at a database that kmsd already uses.
func openStoreReadOnly(databaseURL string) (*store.SQLStore, error) {
	if !store.IsPostgresURL(databaseURL) {
		databaseURL = withReadOnlyMode(databaseURL)
	}
	st, err := store.Open(context.Background(), databaseURL, nil)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return st, nil
}

// auditClient is an audit.Source over the admin audit routes.
type auditClient struct{ c *client }

func (a auditClient) ListAuditChains(ctx context.Context) ([]store.AuditChain, error) {
	var answer struct {
		Chains []audit.Line `json:"chains"`
	}
	if err := a.c.call(http.MethodGet, "kms-admin/audit/chains", nil, &answer); err != nil {
		return nil, err
	}

	chains := make([]store.AuditChain, 0, len(answer.Chains))
	for _, l := range answer.Chains {
		c, err := l.Chain()
		if err != nil {
			return nil, err
		}
		chains = append(chains, c)
	}
	return chains, nil
}

func (a auditClient) ListAuditRecords(
	ctx context.Context,
	chainID string,
	afterSeq uint64,
	limit int,
) ([]store.AuditRecord, error) {
	var answer struct {
		Records []audit.Line `json:"records"`
	}
	if err := a.c.call(http.MethodGet, auditPagePath("records", chainID, afterSeq, limit), nil,
		&answer); err != nil {
		return nil, chainReadError(chainID, err)
	}

	records := make([]store.AuditRecord, 0, len(answer.Records))
	for _, l := range answer.Records {
		r, err := l.Record()
		if err != nil {
			return nil, err
		}
		records = append(records, r)
	}
	return records, nil
}

func (a auditClient) ListAuditCheckpoints(
	ctx context.Context,
	chainID string,
	afterSeq uint64,
	limit int,
) ([]store.AuditCheckpoint, error) {
	var answer struct {
		Checkpoints []audit.Line `json:"checkpoints"`
	}
	if err := a.c.call(http.MethodGet, auditPagePath("checkpoints", chainID, afterSeq, limit),
		nil, &answer); err != nil {
		return nil, chainReadError(chainID, err)
	}

	checkpoints := make([]store.AuditCheckpoint, 0, len(answer.Checkpoints))
	for _, l := range answer.Checkpoints {
		cp, err := l.Checkpoint()
		if err != nil {
			return nil, err
		}
		checkpoints = append(checkpoints, cp)
	}
	return checkpoints, nil
}

// chainReadError converts kmsd's 500 KMS.0101 response to a read of the lines of chain
// chainID, which kmsd sends for a damaged chain file, into a *store.ChainFileError, so
// that audit.Walk and the tail go on with the other chains. It returns any other error
// unchanged. The line number is read from kmsd's message, and is 0 when it is not there.
func chainReadError(chainID string, err error) error {
	var api *apiError
	if errors.As(err, &api) && api.Status == http.StatusInternalServerError &&
		api.Code == "KMS.0101" {
		// kmsd's message reads "audit chain <id> is damaged at line <n> of its chain file".
		line := 0
		if _, after, found := strings.Cut(api.Message, " at line "); found {
			digits, _, _ := strings.Cut(after, " ")
			line, _ = strconv.Atoi(digits)
		}
		return &store.ChainFileError{ChainID: chainID, Line: line, Reason: api.Message}
	}
	return err
}

func auditPagePath(what, chainID string, afterSeq uint64, limit int) string {
	q := url.Values{}
	q.Set("chain_id", chainID)
	q.Set("after", strconv.FormatUint(afterSeq, 10))
	q.Set("limit", strconv.Itoa(limit))
	return "kms-admin/audit/" + what + "?" + q.Encode()
}

// withReadOnlyMode adds mode=ro to a SQLite URL that sets no mode.
func withReadOnlyMode(databaseURL string) string {
	_, query, hasQuery := strings.Cut(databaseURL, "?")
	params, err := url.ParseQuery(query)
	if err == nil && params.Has("mode") {
		return databaseURL
	}
	if hasQuery {
		return databaseURL + "&mode=ro"
	}
	return databaseURL + "?mode=ro"
}
