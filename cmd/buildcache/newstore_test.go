package main

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/buildcache/buildcache/localfs"
)

// TestReadCommandsAcceptAStoreBeingCreated: ls run while another
// process (here a goroutine: the race is on the file system) creates the
// store in a new directory accepts the directory: it is a cache on its
// way, not someone else's files (issue 19, item 14: one of two commands
// started at once on a new --cache exited 2, "is not a cache").
func TestReadCommandsAcceptAStoreBeingCreated(t *testing.T) {
	var refused []string
	parent := t.TempDir()
	t.Parallel()
	for i := range 20 {
		dir := filepath.Join(parent, strconv.Itoa(i))
		created := make(chan error, 1)
		go func() {
			s, err := localfs.Open(dir)
			if err == nil {
				err = s.Close()
			}
			created <- err
		}()
		for creating := true; creating; {
			select {
			case err := <-created:
				if err != nil {
					t.Fatalf("creating %s: %v", dir, err)
				}
				creating = false
			default:
			}
			if _, stderr, code := cli(t, "--cache", dir, "--json", "ls"); code != 0 {
				refused = append(refused, strings.TrimSpace(stderr))
			}
		}
	}
	if len(refused) > 0 {
		t.Errorf("ls refused a store being created %d times, e.g. %q", len(refused), refused[0])
	}
}
