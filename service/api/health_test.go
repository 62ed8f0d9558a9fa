package api

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestHealthHead checks that HEAD on the probe routes answers the GET status without a
// body, for load balancers that probe with HEAD.
func TestHealthHead(t *testing.T) {
	e := newTestEnv(t)

	for _, path := range []string{"/healthz", "/readyz"} {
		t.Run(path, func(t *testing.T) {
			get, err := http.Get(e.http.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			get.Body.Close()

			head, err := http.Head(e.http.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			defer head.Body.Close()
			if head.StatusCode != get.StatusCode {
				t.Errorf("HEAD %s: status %d, GET answers %d", path, head.StatusCode,
					get.StatusCode)
			}
			if head.StatusCode != http.StatusOK {
				t.Errorf("HEAD %s: status %d, want 200", path, head.StatusCode)
			}
			req, _ := http.NewRequest(http.MethodHead, e.http.URL+path, nil)
			r := send(t, req)
			if len(r.Raw) != 0 {
				t.Errorf("HEAD %s answered a body: %q", path, r.Raw)
			}
		})
	}
}

// TestVersionLinksIgnoreHost sends version discovery requests with a foreign Host
// header, which the unauthenticated response must not repeat.
func TestVersionLinksIgnoreHost(t *testing.T) {
	e := newTestEnv(t)

	for _, path := range []string{"/", "/v1.0"} {
		t.Run(path, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, e.http.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "attacker.example"
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}

			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, body)
			}
			if strings.Contains(string(body), "attacker.example") {
				t.Errorf("the response repeats the Host header: %s", body)
			}
			if !strings.Contains(string(body), `"href":"/v1.0/"`) {
				t.Errorf("the response has no link to /v1.0/: %s", body)
			}
		})
	}
}
