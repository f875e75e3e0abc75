package cachetest

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// stream yields n deterministic pseudo-random bytes without holding them:
// each 1 MiB chunk is a fixed random block with the chunk number mixed in.
type stream struct {
	block  []byte
	n, off int64
}

func newStream(n int64) *stream {
	return &stream{block: NewBlob(42, 1<<20).Data, n: n}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.off >= s.n {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && s.off < s.n {
		chunk := s.off >> 20
		i := s.off & (1<<20 - 1)
		m := copy(p, s.block[i:min(int64(len(s.block)), i+s.n-s.off)])
		// Make chunks differ, so the blob is not one block repeated.
		if i < 8 {
			for j := i; j < 8 && j-i < int64(m); j++ {
				p[j-i] ^= byte(chunk >> (8 * j))
			}
		}
		p = p[m:]
		s.off += int64(m)
		total += m
	}
	return total, nil
}

// heapSampler records the peak of live heap objects while it runs.
type heapSampler struct {
	stop chan struct{}
	done chan struct{}
	peak uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := heapObjects(); v > h.peak {
				h.peak = v
			}
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	<-h.done
	if v := heapObjects(); v > h.peak {
		h.peak = v
	}
	return h.peak
}

func (s *suite) testLargeBlob(t *testing.T) {
	if s.cfg.skipLarge != "" {
		t.Skip(s.cfg.skipLarge)
	}
	n := s.cfg.largeSize
	h := sha256.New()
	if _, err := io.Copy(h, newStream(n)); err != nil {
		t.Fatal(err)
	}
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	c := s.newCache(t)

	runtime.GC()
	base := heapObjects()
	sampler := startHeapSampler()
	if err := c.Put(ctxT(t), d, n, newStream(n)); err != nil {
		sampler.Stop()
		t.Fatalf("Put of a %d MiB stream: %v", n>>20, err)
	}
	rc, err := c.Get(ctxT(t), d)
	if err != nil {
		sampler.Stop()
		t.Fatalf("Get: %v", err)
	}
	h.Reset()
	got, err := io.Copy(h, rc)
	rc.Close()
	peak := sampler.Stop()
	if err != nil || got != n {
		t.Fatalf("Get streamed %d bytes, err %v; want %d", got, err, n)
	}
	if hex.EncodeToString(h.Sum(nil)) != d.Hex {
		t.Fatal("Get streamed other bytes than were put")
	}
	var growth uint64
	if peak > base {
		growth = peak - base
	}
	t.Logf("%d MiB through Put and Get: peak heap growth %.1f MiB", n>>20, float64(growth)/(1<<20))
	if growth > s.cfg.heapLimit {
		t.Fatalf("heap grew by %.1f MiB streaming %d MiB, limit %d MiB: the backend buffers instead of streaming",
			float64(growth)/(1<<20), n>>20, s.cfg.heapLimit>>20)
	}
}
