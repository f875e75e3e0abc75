package testserver

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestStartContainerd(t *testing.T) {
	c := StartContainerd(t)
	if n := len(c.Addr); n > 100 {
		t.Errorf("socket path is %d bytes, too close to the 108 byte limit: %s", n, c.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Ctr(ctx, "plugins", "ls")
	if err != nil {
		t.Fatal(err)
	}
	// A pull unpacks into a snapshotter; the CRI plugin stays off.
	for _, want := range []string{"content", "native", "images-service"} {
		if !strings.Contains(out, want) {
			t.Errorf("ctr plugins ls lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "io.containerd.grpc.v1        cri") {
		t.Errorf("the CRI plugin is loaded:\n%s", out)
	}
	c.Stop()
	c.Stop()
}

func TestStartContainerdCRI(t *testing.T) {
	c := StartContainerdCRI(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Crictl(ctx, "images")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "IMAGE") && !strings.Contains(out, "\nIMAGE") {
		t.Errorf("crictl images:\n%s", out)
	}
	out, err = c.Crictl(ctx, "info")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"snapshotter": "native"`) || !strings.Contains(out, `"configPath"`) {
		t.Errorf("crictl info: not the CRI config asked for:\n%s", out)
	}
}
