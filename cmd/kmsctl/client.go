package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hsmkms/kms/service/auth"
)

// credentials is the access key pair kmsctl signs with.
type credentials struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
	ProjectID string `json:"project_id"`
	DomainID  string `json:"domain_id"`
}

// loadCredentials reads KMS_ACCESS_KEY, KMS_SECRET_KEY and KMS_PROJECT_ID, or else the
// credentials file that kmsd writes for its admin on first start.
func loadCredentials(path string, getenv func(string) string) (credentials, error) {
	c := credentials{
		AccessKey: getenv("KMS_ACCESS_KEY"),
		SecretKey: getenv("KMS_SECRET_KEY"),
		ProjectID: getenv("KMS_PROJECT_ID"),
	}
	if c.AccessKey != "" || c.SecretKey != "" {
		if c.AccessKey == "" || c.SecretKey == "" || c.ProjectID == "" {
			return credentials{}, errors.New("set all of KMS_ACCESS_KEY, KMS_SECRET_KEY and KMS_PROJECT_ID")
		}
		return c, nil
	}

	b, err := os.ReadFile(path)
	if err != nil {
		return credentials{}, fmt.Errorf("no credentials: set KMS_ACCESS_KEY, KMS_SECRET_KEY and "+
			"KMS_PROJECT_ID, or give --credentials (reading %s: %w)", path, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return credentials{}, fmt.Errorf("credentials file %s is not valid JSON: %w", path, err)
	}
	if c.AccessKey == "" || c.SecretKey == "" || c.ProjectID == "" {
		return credentials{}, fmt.Errorf("credentials file %s lacks access_key, secret_key or project_id", path)
	}
	return c, nil
}

func defaultCredentialsPath(getenv func(string) string) string {
	if p := getenv("KMS_CREDENTIALS_FILE"); p != "" {
		return p
	}
	dir := getenv("KMS_DATA_DIR")
	if dir == "" {
		dir = "kms-data"
	}
	return filepath.Join(dir, "admin-credentials.json")
}

// client calls the KMS API with signed requests.
type client struct {
	endpoint string
	creds    credentials
	http     *http.Client
	// onRequestID, when set, gets the X-Request-Id of every response of kmsd, which is
	// also the request id of the call's audit record.
	onRequestID func(id string)
}

func newClient(endpoint, caFile string, creds credentials) (*client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s contains no PEM certificate", caFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &client{
		endpoint: strings.TrimRight(endpoint, "/"),
		creds:    creds,
		http:     &http.Client{Transport: transport, Timeout: 60 * time.Second},
	}, nil
}

// apiError is an error response of the service.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// call sends method to path (relative to /v1.0/<project>/) with body as JSON, and
// decodes a 2xx response into out when out is not nil.
func (c *client) call(method, path string, body, out any) error {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return err
		}
	}

	url := c.endpoint + "/v1.0/" + c.creds.ProjectID + "/" + path
	req, err := http.NewRequest(method, url, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("X-Project-Id", c.creds.ProjectID)
	req.Header.Set("User-Agent", "kmsctl")
	auth.Sign(req, raw, c.creds.AccessKey, c.creds.SecretKey, time.Now())

	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s: %w", c.endpoint, err)
	}
	defer res.Body.Close()
	if id := res.Header.Get("X-Request-Id"); id != "" && c.onRequestID != nil {
		c.onRequestID(id)
	}

	answer, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the response: %w", err)
	}
	if res.StatusCode >= 300 {
		return decodeError(res.StatusCode, answer)
	}
	if out == nil || len(answer) == 0 {
		return nil
	}
	return json.Unmarshal(answer, out)
}

func decodeError(status int, body []byte) error {
	var nested struct {
		Error struct {
			Code    string `json:"error_code"`
			Message string `json:"error_msg"`
		} `json:"error"`
		Code    string `json:"error_code"`
		Message string `json:"error_msg"`
	}
	_ = json.Unmarshal(body, &nested)
	e := &apiError{Status: status, Code: nested.Error.Code, Message: nested.Error.Message}
	if e.Code == "" {
		e.Code, e.Message = nested.Code, nested.Message
	}
	if e.Code == "" {
		e.Message = strings.TrimSpace(string(body))
	}
	return e
}
