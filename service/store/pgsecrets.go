package store

import (
	"cmp"
	"context"
	"database/sql/driver"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// minRedactedLength is the shortest connection parameter value that redactingConnector
// takes out of error messages. Shorter values (on, off, 0, UTC) would cut words out of
// the message by chance, and hide no secret worth the name.
const minRedactedLength = 4

// redactedParam is the placeholder that connection error messages show for a secret value.
const redactedParam = "(redacted)"

// IsSecretParam reports whether a database connection parameter named name can carry a
// secret: names that contain "pass" (password, sslpassword, passwd, and go-sqlite3's
// _auth_pass) or "secret", in any case, names "key" or ending in "_key" (SQLCipher's
// _pragma_key), and libpq's "options", whose command-line options can set any run-time
// parameter, a password among them. passfile, a path, is taken too, which hides nothing
// secret.
func IsSecretParam(name string) bool {
	name = strings.ToLower(name)
	return strings.Contains(name, "pass") || strings.Contains(name, "secret") ||
		name == "key" || strings.HasSuffix(name, "_key") || name == "options"
}

// redactingConnector opens connections through pgx and takes the secret values of the
// connection settings out of the messages of its connection errors. PostgreSQL quotes a
// rejected run-time parameter value in its error (invalid value for parameter "x": "v"),
// and a value set through the URL's options parameter can be a password. Errors still
// unwrap to pgx's, so errors.As finds the *pgconn.PgError and its SQLSTATE.
type redactingConnector struct {
	driver.Connector
	secrets []string
}

// Connect opens a connection, as the pgx connector does.
func (c redactingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil && len(c.secrets) > 0 {
		return nil, &redactedConnectError{err: err, secrets: c.secrets}
	}
	return conn, err
}

// redactedConnectError is err with redactedParam in place of each of secrets.
type redactedConnectError struct {
	err     error
	secrets []string
}

func (e *redactedConnectError) Error() string { return redactValues(e.err.Error(), e.secrets) }

// redactValues returns msg with redactedParam in place of each of secrets. Longer values
// must come first (sortLongestFirst), so that a value is replaced before any shorter
// value inside it.
func redactValues(msg string, secrets []string) string {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, redactedParam)
		}
	}
	return msg
}

// sortLongestFirst sorts values by length, longest first.
func sortLongestFirst(values []string) {
	slices.SortFunc(values, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
}

func (e *redactedConnectError) Unwrap() error { return e.err }

// secretValues returns the values of cfg that connection errors must not show: the
// password, each secret-bearing run-time parameter (IsSecretParam), and each value that
// options sets, because the server quotes that value alone. Longer values come first, so
// that a value is replaced before any shorter value inside it.
func secretValues(cfg *pgx.ConnConfig) []string {
	var values []string
	add := func(v string) {
		if len(v) >= minRedactedLength && !slices.Contains(values, v) {
			values = append(values, v)
		}
	}

	add(cfg.Password)
	for name, value := range cfg.RuntimeParams {
		if !IsSecretParam(name) {
			continue
		}
		add(value)
		if name == "options" {
			for _, v := range optionValues(value) {
				add(v)
			}
		}
	}

	sortLongestFirst(values)
	return values
}

// optionValues returns the values that a libpq options string sets, from its
// "-c name=value", "-cname=value" and "--name=value" forms. A backslash keeps the next
// character, a space among them, inside the word, as the server reads it.
func optionValues(options string) []string {
	var values []string
	words := optionWords(options)
	for i, w := range words {
		switch {
		case w == "-c" && i+1 < len(words):
			w = words[i+1]
		case strings.HasPrefix(w, "-c"):
			w = w[len("-c"):]
		case strings.HasPrefix(w, "--"):
			w = w[len("--"):]
		default:
			continue
		}
		if _, value, ok := strings.Cut(w, "="); ok {
			values = append(values, value)
		}
	}
	return values
}

// optionWords splits options at unescaped white space, removing the escaping
// backslashes.
func optionWords(options string) []string {
	var words []string
	var word strings.Builder
	inWord := false
	for i := 0; i < len(options); i++ {
		c := options[i]
		switch {
		case c == '\\' && i+1 < len(options):
			i++
			word.WriteByte(options[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}
