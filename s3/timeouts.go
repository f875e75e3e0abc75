package s3

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/buildcache/buildcache/internal/netwait"
)

// Timeouts bound how long a request waits for an S3 endpoint that has
// stopped answering. A zero field keeps its default.
type Timeouts struct {
	// Connect bounds opening a TCP connection (default 10s). It is set on
	// the SDK's own HTTP client (the default, *awshttp.BuildableClient);
	// a client with another HTTPClient keeps its own dial bound, and
	// ResponseHeader, which counts connecting, holds all the same.
	Connect time.Duration
	// ResponseHeader bounds the wait for an answer's status and headers,
	// counted from when the request (and its body) has been handed over,
	// so a connection that is slow to open counts too (default 10s).
	ResponseHeader time.Duration
	// Stall bounds one wait for the next bytes of a body that stops
	// moving: a Get's Read that gets nothing, or an upload the endpoint
	// stops taking (default 30s). Time the caller spends between Reads
	// does not count.
	Stall time.Duration
}

// Default bounds (see Timeouts). S3 answers in milliseconds, and AWS's
// own advice is to retry a request that has not answered in two seconds;
// ten leave a loaded MinIO or Ceph, or a loopback dial on a loaded
// machine (SYN retransmits at 1 s and 3 s), room. A body that stops for
// 30 s is broken.
const (
	DefaultConnectTimeout        = 10 * time.Second
	DefaultResponseHeaderTimeout = 10 * time.Second
	DefaultStallTimeout          = 30 * time.Second
)

// downFor is how long an endpoint that no try could reach is known to be
// down: while it is, a request makes one try instead of the retryer's, so
// that a far tier over a bucket that is gone costs one failed connection
// per request, not the retryer's backoff, and the first answer ends it.
const downFor = 10 * time.Second

// WithTimeouts sets the bounds on an endpoint that stops answering
// (defaults: Connect 10s, ResponseHeader 10s, Stall 30s; a zero field
// keeps its default). A request that runs into one fails with an error
// that is cache.ErrOffline and names the bound ("no response headers
// within 10s"); it is not tried again, and the endpoint is known down for
// 10 s (see the package documentation, # Timeouts). A context's deadline
// ends a call whatever these say.
func WithTimeouts(t Timeouts) Option {
	return func(o *options) error {
		if t.Connect < 0 || t.ResponseHeader < 0 || t.Stall < 0 {
			return fmt.Errorf("s3: WithTimeouts(%+v): negative timeout", t)
		}
		o.timeouts = Timeouts{
			Connect:        cmp.Or(t.Connect, o.timeouts.Connect),
			ResponseHeader: cmp.Or(t.ResponseHeader, o.timeouts.ResponseHeader),
			Stall:          cmp.Or(t.Stall, o.timeouts.Stall),
		}
		return nil
	}
}

// boundClient is the option New gives the client it makes from the
// caller's: its tries go through a boundedHTTP, and its retryer does not
// repeat a try while the endpoint is known down.
func (c *Cache) boundClient(o *awss3.Options) {
	next := o.HTTPClient
	if b, ok := next.(*awshttp.BuildableClient); ok {
		next = b.WithDialerOptions(func(d *net.Dialer) { d.Timeout = c.opts.timeouts.Connect })
	}
	o.HTTPClient = &boundedHTTP{next: next, c: c}
	if o.Retryer != nil {
		o.Retryer = downRetryer{Retryer: o.Retryer, c: c}
	}
}

// boundedHTTP sends each try under a netwait.Watchdog: the answer's
// headers must come within the ResponseHeader bound, and the bodies both
// ways must keep moving. Any answer ends a known outage; a try that runs
// into a bound starts one at once, as trying again would wait as long.
type boundedHTTP struct {
	next awss3.HTTPClient
	c    *Cache
}

func (h *boundedHTTP) Do(req *http.Request) (*http.Response, error) {
	caller := req.Context()
	t := h.c.opts.timeouts
	wd := netwait.New(caller, t.ResponseHeader, t.Stall)
	req = req.WithContext(wd.Context())
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0 {
		req.Body = watchedUpload(wd, req.Body)
		if getBody := req.GetBody; getBody != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				b, err := getBody()
				if err != nil {
					return nil, err
				}
				return watchedUpload(wd, b), nil
			}
		}
	}
	wd.Start()
	resp, err := h.next.Do(req)
	wd.GotAnswer()
	if err != nil {
		err = wd.Explain(err)
		wd.Release()
		var ne net.Error
		if caller.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
			h.c.markDown()
		}
		return nil, err
	}
	h.c.downUntil.Store(0)
	resp.Body = wd.Body(resp.Body)
	return resp, nil
}

func watchedUpload(wd *netwait.Watchdog, body io.ReadCloser) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{wd.Upload(body), body}
}

// downRetryer is the client's retryer, except that a failed try is not
// repeated while the endpoint is known down.
type downRetryer struct {
	aws.Retryer
	c *Cache
}

func (r downRetryer) IsErrorRetryable(err error) bool {
	return !r.c.knownDown() && r.Retryer.IsErrorRetryable(err)
}

// GetAttemptToken makes downRetryer an aws.RetryerV2, as the SDK wraps
// a plain Retryer.
func (r downRetryer) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := r.Retryer.(aws.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return r.Retryer.GetInitialToken(), nil
}

// knownDown reports whether a request found the endpoint unreachable
// less than downFor ago, with no answer since.
func (c *Cache) knownDown() bool {
	until := c.downUntil.Load()
	return until != 0 && c.opts.now().UnixNano() < until
}

func (c *Cache) markDown() { c.downUntil.Store(c.opts.now().Add(downFor).UnixNano()) }
