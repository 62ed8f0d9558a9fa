package main

import "crypto/tls"

// tlsConfig is the TLS configuration of the HTTPS listener (--tls-cert and --tls-key).
// ServeTLS adds the certificate. TLS 1.0 and 1.1 are rejected: they lack the AEAD cipher
// suites and are deprecated by RFC 8996. Go's default cipher suites and curves apply to
// TLS 1.2, and TLS 1.3 has no configurable suites.
func tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12}
}
