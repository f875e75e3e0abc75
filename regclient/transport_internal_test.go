package regclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The default transport gives up a TLS handshake the server never
// answers. The listener accepts and says nothing.
func TestDefaultTransportBoundsTheTLSHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	tr := newDefaultTransport(Timeouts{Connect: time.Second, TLSHandshake: 100 * time.Millisecond}.or(defaultTimeouts()))
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+ln.Addr().String()+"/v2/", nil)
	_, err = tr.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "TLS handshake timeout") || ctx.Err() != nil {
		t.Fatalf("RoundTrip to a server silent in the handshake = %v, want a TLS handshake timeout well before the context's", err)
	}
}

type refuseAll struct{ sent []string }

func (r *refuseAll) RoundTrip(req *http.Request) (*http.Response, error) {
	r.sent = append(r.sent, req.Method+" "+req.URL.String())
	return nil, errors.New("no network in this test")
}

// The login's /v2/ ping is answered from the known challenge, once, and
// never goes out over a scheme the client does not speak to the registry:
// go-containerregistry would ping a private address over plain HTTP.
func TestLoginPingKeepsTheSchemeAndUsesTheChallenge(t *testing.T) {
	inner := &refuseAll{}
	k := &knownChallenge{inner: inner, host: "10.1.2.3:5000", scheme: "https",
		header: http.Header{"Www-Authenticate": {`Basic realm="x"`}}}
	get := func(url string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		return k.RoundTrip(req)
	}
	if _, err := get("http://10.1.2.3:5000/v2/"); err == nil {
		t.Error("a plain-HTTP ping of an HTTPS registry was not refused")
	}
	resp, err := get("https://10.1.2.3:5000/v2/")
	if err != nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="x"` {
		t.Fatalf("ping = %v, %v; want the known 401", resp, err)
	}
	if len(inner.sent) != 0 {
		t.Errorf("sent %v, want nothing", inner.sent)
	}
	get("https://10.1.2.3:5000/v2/") // answered once: this one goes out
	get("https://10.1.2.3:5000/v2/app/manifests/1")
	if len(inner.sent) != 2 {
		t.Errorf("sent %v, want the second ping and the manifest request", inner.sent)
	}
}
