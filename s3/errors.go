package s3

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/netfail"
)

// apiCode is the S3 error code of err ("NoSuchKey", "AccessDenied", ...),
// or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// httpStatus is the HTTP status of the response that failed, or 0 when
// there was none.
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.HTTPStatusCode()
	}
	return 0
}

// isNotFound: no such key. A HEAD has no body, so a missing bucket looks
// the same; notFound tells them apart.
func isNotFound(err error) bool {
	var nsk *s3types.NoSuchKey
	var nf *s3types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	switch apiCode(err) {
	case "NoSuchKey", "NotFound":
		return true
	}
	return false
}

func isPreconditionFailed(err error) bool {
	return apiCode(err) == "PreconditionFailed" || httpStatus(err) == http.StatusPreconditionFailed
}

// isConditionalConflict: S3 refuses a conditional write while another one
// on the same key is in progress (409 ConditionalRequestConflict).
func isConditionalConflict(err error) bool {
	return apiCode(err) == "ConditionalRequestConflict"
}

func isNoSuchUpload(err error) bool { return apiCode(err) == "NoSuchUpload" }

func isAccessDenied(err error) bool {
	switch apiCode(err) {
	case "AccessDenied", "Forbidden", "SignatureDoesNotMatch", "InvalidAccessKeyId",
		"XAdminUserNotFound", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
		"AuthorizationHeaderMalformed", "AllAccessDisabled":
		return true
	}
	return httpStatus(err) == http.StatusForbidden
}

// ErrNoSuchBucket is in the chain of every error caused by a bucket that
// does not exist, next to the SDK's error: errors.Is(err,
// s3.ErrNoSuchBucket). Its message names the bucket and the endpoint.
var ErrNoSuchBucket = errors.New("no such bucket")

// missingBucket is the error of a bucket that does not exist: its message
// names the bucket and the endpoint, and its chain holds ErrNoSuchBucket
// and the SDK's error.
type missingBucket struct {
	msg string
	sdk error
}

func (e *missingBucket) Error() string   { return e.msg + ": " + e.sdk.Error() }
func (e *missingBucket) Unwrap() []error { return []error{ErrNoSuchBucket, e.sdk} }

// remoteErr wraps an error of the S3 API for op on key, saying in words
// what went wrong and naming bucket and endpoint. The SDK's error stays in
// the chain for errors.As. No credential is ever part of it: the SDK's
// errors hold none, and neither do ours. A call that reached no one
// (cache.ErrOffline) marks the endpoint known down.
func (c *Cache) remoteErr(op, key string, err error) error {
	err = c.describe(op, key, err)
	if errors.Is(err, cache.ErrOffline) {
		c.markDown()
	}
	return err
}

// describe is remoteErr without marking the endpoint down: for a body
// that broke off after the endpoint answered.
func (c *Cache) describe(op, key string, err error) error {
	where := fmt.Sprintf("bucket %q at %s", c.bucket, c.endpoint)
	if key != "" {
		where = fmt.Sprintf("s3://%s/%s at %s", c.bucket, key, c.endpoint)
	}
	// The caller's context ending is the caller's business: not counted,
	// not an outage. A dial that ran out of time is the network's,
	// although its error is context.DeadlineExceeded too.
	var dial *net.OpError
	if errors.Is(err, context.Canceled) || (errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &dial)) {
		return fmt.Errorf("s3: %s %s: %w", op, where, err)
	}
	c.stats.Errors.Add(1)
	switch {
	case apiCode(err) == "NoSuchBucket":
		return &missingBucket{fmt.Sprintf("s3: %s: bucket %q does not exist at %s", op, c.bucket, c.endpoint), err}
	case isAccessDenied(err):
		return fmt.Errorf("s3: %s: access to bucket %q at %s denied; check the credentials and the bucket's policy: %w", op, c.bucket, c.endpoint, err)
	case netfail.Unreachable(err):
		return fmt.Errorf("s3: %s: cannot reach S3 endpoint %s (bucket %q): %w: %w", op, c.endpoint, c.bucket, cache.ErrOffline, err)
	}
	return fmt.Errorf("s3: %s %s: %w", op, where, err)
}

// notFound is the error for a key that is not there. A HeadObject answers
// 404 both for a missing key and for a missing bucket (or, on some
// servers, an unknown access key), so the first time it happens the bucket
// is checked with a request whose error has a body.
func (c *Cache) notFound(ctx context.Context, op string, d v1.Hash, key string) error {
	if !c.bucketOK.Load() {
		switch err := c.Check(ctx); {
		case err == nil:
		case apiCode(err) == "AccessDenied":
			// Credentials that may read objects but not list them: the
			// bucket exists (else NoSuchBucket), the key does not.
			c.bucketOK.Store(true)
		default:
			return err
		}
	}
	return fmt.Errorf("s3: %s %s: no object s3://%s/%s: %w", op, d, c.bucket, key, cache.ErrNotFound)
}
