package testserver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/platforms"
)

func TestStartBuildkitd(t *testing.T) {
	b := StartBuildkitd(t)
	if n := len(strings.TrimPrefix(b.Addr, "unix://")); n > 100 {
		t.Errorf("socket path is %d bytes, too close to the 108 byte limit: %s", n, b.Addr)
	}
	c := b.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, err := c.ListWorkers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, w := range ws {
		for _, p := range w.Platforms {
			have = append(have, platforms.Format(p))
		}
	}
	if !slices.Contains(have, "linux/amd64") && !slices.Contains(have, "linux/arm64") {
		t.Errorf("worker platforms %v: want the host's", have)
	}
	if Arm64Emulation() == nil && !slices.Contains(have, "linux/arm64") {
		t.Errorf("arm64 emulation is set up but the worker's platforms are %v", have)
	}
	b.PruneAll(t)

	b.Stop()
	b.Stop() // twice is fine
	for _, dir := range []string{b.Root, filepath.Dir(strings.TrimPrefix(b.Addr, "unix://"))} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s still exists after Stop: %v", dir, err)
		}
	}
}

func TestArm64Emulation(t *testing.T) {
	if err := Arm64Emulation(); err != nil {
		t.Logf("arm64 emulation unavailable: %v", err)
		if os.Getenv("CI") != "" && os.Geteuid() == 0 {
			t.Errorf("CI runs as root and scripts/test sets up qemu-aarch64: %v", err)
		}
	}
}

func TestBinfmtAarch64(t *testing.T) {
	for _, tc := range []struct {
		magic string
		want  bool
	}{
		{"7f454c460201010000000000000000000200b700", true},
		{"7f454c460201010000000000000000000200f300", false}, // riscv64
		{"7f454c460101010000000000000000000200", false},     // 32-bit, short
	} {
		if got := (binfmtHandler{magic: tc.magic}).aarch64(); got != tc.want {
			t.Errorf("aarch64(%s) = %v, want %v", tc.magic, got, tc.want)
		}
	}
	if got := unescapeMountPath(`/tmp/a\040b`); got != "/tmp/a b" {
		t.Errorf("unescapeMountPath = %q", got)
	}
}
