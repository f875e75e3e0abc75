package cache

import "context"

// WriteProber is implemented by a store that can tell, cheaply and without
// storing or evicting anything, whether it can take a write now: a
// mirror's readiness (mirror.Health) asks it every second or two. localfs
// creates, writes, syncs and removes a small file in its temp directory,
// so a read-only or full file system, a temp directory gone or a closed
// store fail it; a tier answers for its near tier (through Unwrap: a far
// tier that is down leaves a tier writable, and its outage is handled and
// counted by the tier).
type WriteProber interface {
	// ProbeWrite returns nil when a write would not fail for want of a
	// writable, open store; else why (wrapping ErrNoSpace for a full
	// file system). It honours ctx; a store on a file system that
	// hangs may still block in the kernel, so callers bound the wait.
	ProbeWrite(ctx context.Context) error
}
