// Package regclient provides the HTTP client that buildcache talks to
// OCI registries with: the part of the distribution API that a resolver
// (package registry), a repository-backed cache (package ocirepo) and a
// mirror need, with the credentials, transport security, retries and
// timeouts a registry that is slow, failing or hostile calls for.
//
// New(opts...) returns a *Client, safe for concurrent use and meant to be
// shared: what it learns about a registry (its logins, its stated rate
// limit, that it is down) serves every user of the Client. Give the same
// one to registry.WithClient and ocirepo.WithClient.
//
// # Requests
//
// Requests go out without credentials and authenticate only when the
// registry answers 401 (with credentials from the keychain, default
// authn.DefaultKeychain), using the challenge of that 401: anonymous
// registries cost no /v2/ ping, an authenticated revalidation costs the
// 401 and the HEAD (and a bearer token's request), and concurrent
// requests that meet one challenge share one login. Every request carries
// the User-Agent "buildcache", logins and token requests included. 429,
// 5xx and broken connections are retried with backoff, honouring
// Retry-After (WithRetry). Up to 10 redirects to http or https URLs are
// followed; a longer chain or a redirect elsewhere (file://) is the
// registry's error, with the redirect's status: not an outage, not
// retried.
//
// Plain HTTP is used only for loopback registries ("localhost",
// 127.0.0.0/8, ::1) and those WithInsecureRegistries names; every other
// registry, private addresses such as 10.0.0.0/8 or 192.168.0.0/16
// included, whatever the port, is spoken to over HTTPS, as Docker and
// containerd do.
//
// A registry whose every try failed to connect is known to be down for
// 10 seconds, or until it answers; one that answered a 5xx with a
// Retry-After the client did not wait for (longer than WithRetry's
// longest wait, as for a 429) is known to be failing until then (at most
// 10 minutes). Meanwhile a request makes one try instead of the retry
// policy's, so that a caller serving many cached images while it is down
// pays one refused connection for each, not a backoff (KnownDown). Each
// registry's rate limit, as its last response stated it (RateLimit-Limit
// and -Remaining, and the last 429), is kept for RateLimit and
// RateLimits.
//
// # Falling back
//
// A caller that has something else to serve if the registry fails, a
// cached copy, says so with WithFallback(ctx, budget): its requests then
// give up within the budget whatever the registry does. A registry whose
// last try timed out, or whose 5xx's Retry-After has not passed, is not
// asked at all while it is known to be failing (a *KnownDownError); one
// that refused connections gets one try; a silent one is waited for at
// most the budget, over all tries; a backoff or a Retry-After that would
// end past the budget is not waited for (ErrFallbackBudget). Requests
// without it, for what nothing else can serve, keep the retry policy and
// the timeouts below.
//
// # Timeouts
//
// A registry that stops answering fails a request within bounds
// (WithTimeouts; the defaults in brackets): connecting [30s], the TLS
// handshake [10s], waiting for an answer's headers once the request is
// sent [30s], and each wait for the next bytes of a body that stops
// moving, downloads and uploads alike [30s; time the caller spends
// between Reads does not count]. Such a failure is a *RemoteError that
// is a timeout (net.Error): it is retried like a broken connection
// (WithRetry), so a silent registry costs at most attempts × bound plus
// the backoff. The header and stall bounds are kept by the client itself,
// by cancelling the request's context, so they also hold for a transport
// given with WithTransport (which keeps its own dial and TLS settings;
// WithTimeouts' Connect and TLSHandshake conflict with it). A context's
// deadline or cancellation always wins: the call ends with the context's
// error.
//
// # Errors
//
// A registry's failure is a *RemoteError (errors.As), with the operation,
// the URL and the status (0 when no answer arrived); Temporary tells an
// outage (no answer, 5xx, 429) from a refusal. MarkOffline adds
// cache.ErrOffline to one that gave no answer at all (refused, reset,
// timed out, name not found, answer cut off). Credentials never appear in
// an error.
package regclient
