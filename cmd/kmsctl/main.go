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
	"credentials": {"credentials create [--role ROLE] [--project ID] [--domain ID] " +
		"[--user ID] | list | disable|enable|delete ACCESS_KEY", runCredentials},
}

// cliEnv is what every command gets: the client of kmsd and the output streams.
//
// Every command starts without credentials too, so that --help and the forms that never
// call kmsd (audit verify reads a file or a database) work without them. A command calls
// kmsd through call or requireClient, which then return why there is no client.
type cliEnv struct {
	client *client
	stdout io.Writer
	stderr io.Writer
	// clientErr is why client is nil: no credentials, or an unreadable --ca-file.
	clientErr error
}

// requireClient returns the client, or why there is none.
func (env *cliEnv) requireClient() (*client, error) {
	if env.client == nil {
		return nil, fmt.Errorf("this command calls kmsd: %w", env.clientErr)
	}
	return env.client, nil
}

// call sends a request to kmsd as client.call does, or returns why there is no client.
func (env *cliEnv) call(method, path string, body, out any) error {
	c, err := env.requireClient()
	if err != nil {
		return err
	}
	return c.call(method, path, body, out)
}

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
	// run writes the usage itself: to stdout for -h and --help, to stderr after the error
	// message of an invalid flag.
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs)
			return 0
		}
		usage(stderr, fs)
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
	env.clientErr = err

	if err := cmd.run(env, fs.Args()[1:]); err != nil {
		var help helpRequest
		if errors.As(err, &help) {
			printCommandHelp(stdout, cmd, help.flags)
			return 0
		}
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
	fmt.Fprintln(w, "\nglobal flags, given before COMMAND:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nkmsctl COMMAND --help lists the flags of a command.")
}

// printCommandHelp writes the usage of cmd and the flags of flags, the flag set of the
// command or subcommand that got -h or --help. flags is nil for a command that was given
// --help in place of a subcommand.
func printCommandHelp(w io.Writer, cmd command, flags *flag.FlagSet) {
	fmt.Fprintf(w, "usage: kmsctl %s\n", cmd.usage)
	if flags != nil {
		defined := 0
		flags.VisitAll(func(*flag.Flag) { defined++ })
		if defined == 0 {
			fmt.Fprintf(w, "\nkmsctl %s takes no flags.\n", flags.Name())
		} else {
			fmt.Fprintf(w, "\nflags of kmsctl %s:\n", flags.Name())
			flags.SetOutput(w)
			flags.PrintDefaults()
		}
	}
	fmt.Fprintln(w, "\nThe global flags --endpoint, --credentials and --ca-file go before the "+
		"command; kmsctl --help lists them.")
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

// helpRequest is the error of a command given -h or --help, for which run prints the
// command's usage and the flags of flags (see printCommandHelp).
type helpRequest struct{ flags *flag.FlagSet }

func (helpRequest) Error() string { return "help requested" }

// isHelpFlag reports whether arg is one of the flags that request help.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "-help", "--h", "--help":
		return true
	}
	return false
}

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
// arguments, and checks the number of positional arguments. Errors are those of
// parseFlags, or a usageError for a wrong number of positional arguments.
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != positional {
		noun := "arguments"
		if positional == 1 {
			noun = "argument"
		}
		return nil, usageError{fmt.Sprintf("expected %d %s, got %d", positional, noun, len(pos))}
	}
	return pos, nil
}

// parseFlags parses the flags at the start of args with fs. It returns a helpRequest
// for -h or --help and a usageError for an invalid flag, and writes nothing.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return helpRequest{flags: fs}
	}
	if err != nil {
		return usageError{err.Error()}
	}
	return nil
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
