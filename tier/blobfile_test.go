package tier_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/buildcache/buildcache/cache"
	"github.com/buildcache/buildcache/cache/cachetest"
	"github.com/buildcache/buildcache/internal/captest"
	"github.com/buildcache/buildcache/tier"
)

// The tier sends its near tier's files, verified as localfs verifies them.
func TestCapabilityFileOpener(t *testing.T) {
	cachetest.RunFileOpener(t, func(t *testing.T) cache.LayerCache {
		return overDisk(t, func(t *testing.T) cache.LayerCache { return mem(t) })
	}, captest.CorruptLocal)
}

// A blob only the far tier holds is not a file: OpenFile says ErrNotFound
// and Get serves it, filling the near tier, whose file is then sent.
func TestOpenFileFarOnly(t *testing.T) {
	far := mem(t)
	c, err := tier.New(disk(t), far)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b := cachetest.NewBlob(1, 1000)
	put(t, far, b)
	if _, err := c.OpenFile(t.Context(), b.Digest); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("OpenFile of a far-only blob = %v, want ErrNotFound", err)
	}
	if got, err := read(t, c, b.Digest); err != nil || !bytes.Equal(got, b.Data) {
		t.Fatalf("Get: %v", err)
	}
	bf, err := c.OpenFile(t.Context(), b.Digest)
	if err != nil {
		t.Fatalf("OpenFile after the fill: %v", err)
	}
	defer bf.Close()
	var out bytes.Buffer
	if _, err := bf.SendRange(t.Context(), &out, 0, bf.Size()); err != nil || !bytes.Equal(out.Bytes(), b.Data) {
		t.Fatalf("SendRange: %v", err)
	}
	if got := c.StatsByTier().Stats.BytesOut; got < uint64(len(b.Data))*2 {
		t.Errorf("BytesOut = %d: the send is not counted", got)
	}
}
