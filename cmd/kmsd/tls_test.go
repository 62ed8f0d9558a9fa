package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	softhsmsetup "github.com/hsmkms/kms/softhsm-setup"
)

// writeSelfSigned writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and its key
// to dir as PEM files, and returns their paths.
func writeSelfSigned(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kmsd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}

	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// httpsClient trusts only the certificate in certPath and offers TLS versions min to max.
func httpsClient(t *testing.T, certPath string, minVersion, maxVersion uint16) *http.Client {
	t.Helper()

	pemBytes, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("the test certificate does not parse")
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, MinVersion: minVersion, MaxVersion: maxVersion,
	}}
	t.Cleanup(transport.CloseIdleConnections)
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}
}

// startKmsdTLS runs kmsd with --tls-cert and --tls-key and waits until /readyz answers
// 200 over HTTPS.
func startKmsdTLS(t *testing.T, dataDir, certPath, keyPath string) *kmsdProcess {
	t.Helper()
	if _, err := softhsmsetup.FindModule(); err != nil {
		t.Skip(err)
	}
	bin := build(t, "github.com/hsmkms/kms/cmd/kmsd", "kmsd")
	addr := freeAddr(t)

	p := &kmsdProcess{addr: addr, logs: &syncBuffer{}}
	p.cmd = exec.Command(bin, "--data-dir", dataDir, "--listen", addr,
		"--tls-cert", certPath, "--tls-key", keyPath)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})

	client := httpsClient(t, certPath, tls.VersionTLS12, 0)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res, err := client.Get("https://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("kmsd did not become ready over HTTPS within 30 s; logs:\n%s", p.logs)
	return nil
}

func TestServeTLS(t *testing.T) {
	work := t.TempDir()
	dataDir := filepath.Join(work, "kms-data")
	certPath, keyPath := writeSelfSigned(t, work)
	p := startKmsdTLS(t, dataDir, certPath, keyPath)
	url := "https://" + p.addr + "/readyz"

	res, err := httpsClient(t, certPath, tls.VersionTLS12, tls.VersionTLS12).Get(url)
	if err != nil {
		t.Fatalf("GET /readyz over TLS 1.2: %v", err)
	}
	res.Body.Close()
	if res.TLS == nil || res.TLS.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 client: connection state %+v, want TLS 1.2", res.TLS)
	}

	res, err = httpsClient(t, certPath, tls.VersionTLS13, 0).Get(url)
	if err != nil {
		t.Fatalf("GET /readyz over TLS 1.3: %v", err)
	}
	res.Body.Close()

	_, err = httpsClient(t, certPath, tls.VersionTLS10, tls.VersionTLS11).Get(url)
	if err == nil {
		t.Error("a TLS 1.1 client connected, want the handshake rejected")
	}

	res, err = http.Get("http://" + p.addr + "/readyz")
	if err != nil {
		t.Fatalf("plain HTTP request: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the HTTPS listener: status %d, want 400", res.StatusCode)
	}

	kmsctlBin := build(t, "github.com/hsmkms/kms/cmd/kmsctl", "kmsctl")
	cmd := exec.Command(kmsctlBin, "--endpoint", "https://"+p.addr, "--ca-file", certPath,
		"create-key", "--alias", "over-tls")
	cmd.Env = append(os.Environ(), "KMS_DATA_DIR="+dataDir, "KMS_ACCESS_KEY=", "KMS_SECRET_KEY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kmsctl create-key over HTTPS: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(`"key_id"`)) {
		t.Errorf("kmsctl create-key over HTTPS printed no key id: %s", out)
	}

	p.stop(t)
}

// TestKmsdRejectsBadTLSFilesFirst starts kmsd with a missing certificate, and with a key
// of another certificate. kmsd must exit with an error that names the problem before it
// creates its data directory.
func TestKmsdRejectsBadTLSFilesFirst(t *testing.T) {
	certPath, _ := writeSelfSigned(t, t.TempDir())
	_, otherKey := writeSelfSigned(t, t.TempDir())
	tests := []struct {
		name      string
		cert, key string
		wantCause string
	}{
		{"missing certificate", filepath.Join(t.TempDir(), "missing.pem"), otherKey,
			"no such file or directory"},
		{"key of another certificate", certPath, otherKey,
			"private key does not match public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "kms-data")
			p := launchKmsd(t, []string{"--data-dir", dataDir,
				"--tls-cert", tt.cert, "--tls-key", tt.key})
			waitForFailedExit(t, p, "its start")

			if logs := p.logs.String(); !strings.Contains(logs, tt.wantCause) {
				t.Errorf("the log does not name the cause %q; logs:\n%s", tt.wantCause, logs)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the data directory exists after the rejected start (%v)", err)
			}
		})
	}
}
