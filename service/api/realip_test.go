package api

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestIPExtractorTrustedProxies(t *testing.T) {
	_, proxies, err := net.ParseCIDR("10.0.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	trusted := []*net.IPNet{proxies}

	cases := []struct {
		name    string
		trusted []*net.IPNet
		remote  string
		xff     string
		want    string
	}{
		{"no trusted proxies ignores the header", nil, "10.0.0.5:4000", "203.0.113.7", "10.0.0.5"},
		{"trusted proxy forwards the client", trusted, "10.0.0.5:4000", "203.0.113.7",
			"203.0.113.7"},
		{"untrusted peer's header is ignored", trusted, "192.0.2.9:4000", "203.0.113.7",
			"192.0.2.9"},
		{"client's own entry left of the proxy's is ignored", trusted, "10.0.0.5:4000",
			"198.51.100.1, 203.0.113.7", "203.0.113.7"},
		{"private address is not trusted unless listed", trusted, "192.168.1.1:4000",
			"203.0.113.7", "192.168.1.1"},
		{"loopback is not trusted unless listed", trusted, "127.0.0.1:4000", "203.0.113.7",
			"127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.RemoteAddr = tc.remote
			r.Header.Set("X-Forwarded-For", tc.xff)

			if got := ipExtractor(tc.trusted)(r); got != tc.want {
				t.Errorf("source address = %s, want %s", got, tc.want)
			}
		})
	}
}
