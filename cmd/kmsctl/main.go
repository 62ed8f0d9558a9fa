// Command kmsctl is the command-line client of kmsd. It signs every request with an
// access key pair: KMS_ACCESS_KEY, KMS_SECRET_KEY and KMS_PROJECT_ID, or the
// admin-credentials.json file that kmsd writes on its first start.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one kmsctl subcommand.
type command struct {
	usage string
	run   func(env *cliEnv, args []string) error
}

var commands = map[string]command{
	"create-key":      {"create-key --alias NAME [--description TEXT]", runCreateKey},
	"describe-key":    {"describe-key KEY", runDescribeKey},
	"list-keys":       {"list-keys [--limit N] [--marker N] [--state 1-5] [--spec ALL]", runListKeys},
	"create-datakey":  {"create-datakey KEY [--bits N] [--no-plaintext] [--context k=v]... [--aad TEXT]", runCreateDataKey},
	"encrypt-datakey": {"encrypt-datakey KEY --plain-hex HEX [--context k=v]... [--aad TEXT]", runEncryptDataKey},
	"decrypt-datakey": {"decrypt-datakey KEY --cipher HEX [--length BYTES] [--context k=v]... [--aad TEXT]", runDecryptDataKey},
	"encrypt-file":    {"encrypt-file KEY IN OUT [--context k=v]...", runEncryptFile},
	"decrypt-file":    {"decrypt-file IN OUT", runDecryptFile},
	"credentials":     {"credentials create|list|disable|enable|delete ...", runCredentials},
}

// cliEnv is what every command gets: a client and the output stream.
type cliEnv struct {
	client *client
	stdout io.Writer
	stderr io.Writer
	// clientErr is why client is nil, for commands in mayRunWithoutCredentials.
	clientErr error
}

// mayRunWithoutCredentials lists the commands that start without credentials, because
// some of their forms never call kmsd (audit verify reads a file or a database).
var mayRunWithoutCredentials = map[string]bool{}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kmsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", envOr(getenv, "KMS_ENDPOINT", "http://127.0.0.1:8080"),
		"kmsd base URL (env KMS_ENDPOINT)")
	credsPath := fs.String("credentials", defaultCredentialsPath(getenv),
		"credentials JSON file, used when KMS_ACCESS_KEY is not set (env KMS_CREDENTIALS_FILE)")
	caFile := fs.String("ca-file", getenv("KMS_CA_FILE"), "PEM CA certificate for an HTTPS endpoint (env KMS_CA_FILE)")
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		usage(stderr, fs)
		return 2
	}

	cmd, ok := commands[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(stderr, "kmsctl: unknown command %q\n", fs.Arg(0))
		usage(stderr, fs)
		return 2
	}

	env := &cliEnv{stdout: stdout, stderr: stderr}
	creds, err := loadCredentials(*credsPath, getenv)
	if err == nil {
		env.client, err = newClient(*endpoint, *caFile, creds)
	}
	if err != nil && !mayRunWithoutCredentials[fs.Arg(0)] {
		fmt.Fprintf(stderr, "kmsctl: %v\n", err)
		return 1
	}
	env.clientErr = err

	if err := cmd.run(env, fs.Args()[1:]); err != nil {
		fmt.Fprintf(stderr, "kmsctl %s: %v\n", fs.Arg(0), err)
		var usageErr usageError
		if errors.As(err, &usageErr) {
			fmt.Fprintf(stderr, "usage: kmsctl %s\n", cmd.usage)
			return 2
		}
		return 1
	}
	return 0
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: kmsctl [--endpoint URL] [--credentials FILE] COMMAND [ARGS]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %s\n", commands[name].usage)
	}
	fmt.Fprintln(w, "\nglobal flags:")
	fs.PrintDefaults()
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// usageError is a mistake in a command's arguments.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// contextFlag collects repeated --context k=v flags into an encryption context.
type contextFlag map[string]string

func (c contextFlag) String() string { return fmt.Sprint(map[string]string(c)) }

func (c contextFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("--context takes key=value, got %q", v)
	}
	c[k] = val
	return nil
}

// parse parses a command's flags, allowing them before and after positional
// arguments, and checks the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != positional {
		return nil, usageError{fmt.Sprintf("expected %d arguments, got %d", positional, len(pos))}
	}
	return pos, nil
}

// printJSONLine writes v as one line of JSON.
func printJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
