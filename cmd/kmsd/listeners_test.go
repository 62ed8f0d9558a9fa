package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMetricsOnOwnListener checks that --metrics-listen moves GET /metrics off the API
// listener and that "off" serves it nowhere.
func TestMetricsOnOwnListener(t *testing.T) {
	metricsAddr := freeAddr(t)
	p := launchKmsd(t, []string{"--data-dir", filepath.Join(t.TempDir(), "kms-data"),
		"--metrics-listen", metricsAddr})
	p.waitFor(t, "/readyz", http.StatusOK, 60*time.Second)

	if status, _ := p.get("/metrics"); status != http.StatusNotFound {
		t.Errorf("GET /metrics on the API listener: status %d, want 404", status)
	}

	res, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "kms_http_requests_total") {
		t.Errorf("GET /metrics on the metrics listener: status %d, body without kms_http_requests_total", res.StatusCode)
	}
}

func TestMetricsListenValidation(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{{"", true}, {"off", true}, {"127.0.0.1:9100", true}, {"nowhere", false}} {
		_, err := loadConfig([]string{"--metrics-listen", tc.value}, envFrom(nil), io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("--metrics-listen %q: error %v, want ok=%v", tc.value, err, tc.ok)
		}
	}
}
