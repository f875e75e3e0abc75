package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/internal/redact"
)

// explanationJSON is cache.Explanation as --json prints it; empty fields
// played no part in the decision and are left out.
type explanationJSON struct {
	Policy        string   `json:"policy"`
	MaxAgeSeconds float64  `json:"max_age_seconds,omitempty"`
	Bypass        bool     `json:"bypass,omitempty"`
	LastChecked   string   `json:"last_checked,omitempty"` // RFC 3339, UTC
	AgeSeconds    float64  `json:"age_seconds,omitempty"`  // since LastChecked
	StoredDigest  string   `json:"stored_digest,omitempty"`
	RemoteDigest  string   `json:"remote_digest,omitempty"`
	Missing       []string `json:"missing,omitempty"`
	FetchedBlobs  int      `json:"fetched_blobs"`
	FetchedBytes  int64    `json:"fetched_bytes"`
	UpstreamError string   `json:"upstream_error,omitempty"`
	RetryAfter    string   `json:"retry_after,omitempty"` // RFC 3339, UTC
	Trust         string   `json:"trust,omitempty"`       // what the trust policy said
	Reason        string   `json:"reason"`
}

func explanationOf(w cache.Explanation) *explanationJSON {
	e := &explanationJSON{
		Policy: w.Policy.String(), MaxAgeSeconds: w.MaxAge.Seconds(), Bypass: w.Bypass,
		FetchedBlobs: w.Fetched, FetchedBytes: w.FetchedBytes,
		UpstreamError: redact.String(w.UpstreamError), Reason: w.Reason, Trust: w.Trust,
	}
	if !w.LastChecked.IsZero() {
		e.LastChecked, e.AgeSeconds = w.LastChecked.UTC().Format(time.RFC3339), w.Age.Seconds()
	}
	if !w.RetryAfter.IsZero() {
		e.RetryAfter = w.RetryAfter.UTC().Format(time.RFC3339)
	}
	if w.StoredDigest.Hex != "" {
		e.StoredDigest = w.StoredDigest.String()
	}
	if w.RemoteDigest.Hex != "" {
		e.RemoteDigest = w.RemoteDigest.String()
	}
	for _, d := range w.Missing {
		e.Missing = append(e.Missing, d.String())
	}
	return e
}

// printExplanation prints e under its image, a few indented lines:
//
//	why: one HEAD: the tag still points to the cached digest
//	  policy always, max age 0s; last checked 12s ago (2026-01-01T00:00:00Z)
//	  cached sha256:1a7e…, registry sha256:1a7e…
//	  fetched 0 blobs, 0 B
func printExplanation(w io.Writer, e *explanationJSON) {
	if e == nil {
		return
	}
	fmt.Fprintf(w, "  why: %s\n", e.Reason)
	if e.Trust != "" {
		fmt.Fprintf(w, "    trust: %s\n", e.Trust)
	}
	if e.Policy == "" {
		return // a refusal: nothing was served
	}
	line := "policy " + e.Policy
	if e.Bypass {
		line += ", cache bypassed"
	}
	line += ", max age " + seconds(e.MaxAgeSeconds)
	if e.LastChecked != "" {
		line += fmt.Sprintf("; last checked %s ago (%s)", seconds(e.AgeSeconds), e.LastChecked)
	} else {
		line += "; never checked"
	}
	fmt.Fprintf(w, "    %s\n", line)
	if e.StoredDigest != "" || e.RemoteDigest != "" {
		fmt.Fprintf(w, "    cached %s, registry %s\n", orNone(shortDigest(e.StoredDigest)), orNone(shortDigest(e.RemoteDigest)))
	}
	if len(e.Missing) > 0 {
		short := make([]string, len(e.Missing))
		for i, d := range e.Missing {
			short[i] = shortDigest(d)
		}
		fmt.Fprintf(w, "    missing %s: %s\n", plural(len(e.Missing), "blob"), strings.Join(short, ", "))
	}
	fmt.Fprintf(w, "    fetched %s, %s\n", plural(e.FetchedBlobs, "blob"), humanize.IBytes(uint64(e.FetchedBytes)))
	if e.UpstreamError != "" {
		fmt.Fprintf(w, "    registry error: %s\n", e.UpstreamError)
	}
	if e.RetryAfter != "" {
		fmt.Fprintf(w, "    retry after %s\n", e.RetryAfter)
	}
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
