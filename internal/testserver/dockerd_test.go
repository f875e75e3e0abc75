package testserver

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestStartDockerd(t *testing.T) {
	d := StartDockerd(t, "http://127.0.0.1:5999")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := d.Docker(ctx, nil, "info", "--format", "{{.Driver}} {{.RegistryConfig.Mirrors}}")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != "vfs [http://127.0.0.1:5999/]" {
		t.Errorf("docker info = %q, want the vfs driver and the mirror", got)
	}
	d.Stop()
	d.Stop()
}
