package cache

// MirrorStats counts what a registry mirror (mirror.Mirror's Stats) did
// beyond its store's and its resolver's counters.
type MirrorStats struct {
	// FailedResponses counts the responses that failed or were cut short,
	// by reason ("not_found", "upstream", "digest_mismatch", "no_space",
	// "stalled", "client_gone", ...; the mirror package's Reason
	// constants). The map is the caller's.
	FailedResponses map[string]uint64
	// DigestMismatches counts blob downloads whose bytes did not match
	// their digest or size (each also fails its clients' responses).
	DigestMismatches uint64
	// UpstreamFetches is the blob downloads in progress now, and
	// UpstreamFetchesWaiting those waiting for one of them to end.
	UpstreamFetches, UpstreamFetchesWaiting int64
}
