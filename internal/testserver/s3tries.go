package testserver

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TryCounter is an S3 client's HTTP client that counts the requests it
// sends: with the SDK's retries, one per try.
type TryCounter struct {
	next s3.HTTPClient
	n    atomic.Int64
}

// Do implements s3.HTTPClient.
func (c *TryCounter) Do(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.Do(r)
}

// Tries is how many requests were sent.
func (c *TryCounter) Tries() int64 { return c.n.Load() }

// ClientTo is Client sending to endpoint instead of the server's own
// ("http://" + a Gate's address, or a ClosedPort), with its tries
// counted.
func (s *S3Server) ClientTo(endpoint string) (*s3.Client, *TryCounter) {
	tries := &TryCounter{next: awshttp.NewBuildableClient()}
	return s.Client(func(o *s3.Options) {
		o.BaseEndpoint = &endpoint
		o.HTTPClient = tries
	}), tries
}

// ClosedPort is an address on 127.0.0.1 where nothing listens: a
// connection to it is refused.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
