package mirror_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/buildcache/buildcache/mirror"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (any 127.0.0.0/8 address is local on Linux), so that the
// server sees distinct clients.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}}
}

// attack sends wrong passwords to url at rate a second, open loop (at
// most 64 outstanding), from the addresses sources, until ctx ends.
// ramped is closed once it has sent for a second.
func attack(ctx context.Context, url string, rate int, sources []string) (wg *sync.WaitGroup, ramped chan struct{}) {
	clients := make([]*http.Client, len(sources))
	for i, ip := range sources {
		clients[i] = clientFrom(ip)
	}
	wg, ramped = new(sync.WaitGroup), make(chan struct{})
	wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		outstanding := make(chan struct{}, 64)
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if i == rate {
				close(ramped)
			}
			select {
			case outstanding <- struct{}{}:
			default:
				continue
			}
			wg.Go(func() {
				defer func() { <-outstanding }()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.SetBasicAuth("alice", fmt.Sprint("guess-", i))
				if resp, err := clients[i%len(clients)].Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
	})
	return wg, ramped
}

// BenchmarkAuthUnderAttack measures a request with good credentials
// (remembered after the first) while wrong passwords arrive at 30 a
// second, about what took both cores in issue 19, from one address or
// from 256, at bcrypt's default cost. It uses only RequireAuth and
// ParseHtpasswd, so it runs on the code before the limits too. A fixed
// count: the attack slows requests down after b.Loop has estimated how
// many fit in a time.
//
//	go test ./mirror/ -run '^$' -bench AuthUnderAttack -benchtime 300x
func BenchmarkAuthUnderAttack(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw-a"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	h, err := mirror.ParseHtpasswd(strings.NewReader("alice:" + string(hash) + "\n"))
	if err != nil {
		b.Fatal(err)
	}
	var many []string
	for i := range 256 {
		many = append(many, fmt.Sprintf("127.0.1.%d", i))
	}
	for _, bc := range []struct {
		name    string
		sources []string
	}{
		{"no attack", nil},
		{"one address", []string{"127.0.0.2"}},
		{"256 addresses", many},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := httptest.NewServer(mirror.RequireAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), h))
			defer srv.Close()
			ctx, cancel := context.WithCancel(b.Context())
			defer cancel()
			if bc.sources != nil {
				wg, ramped := attack(ctx, srv.URL+"/v2/", 30, bc.sources)
				defer wg.Wait()
				defer cancel()
				<-ramped
			}
			client := clientFrom("127.0.0.3")
			get := func() {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
				req.SetBasicAuth("alice", "pw-a")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			get() // the one check
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				get()
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
