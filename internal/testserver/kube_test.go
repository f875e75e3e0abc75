package testserver

import (
	"strings"
	"testing"
)

// The API server answers with the admin token, refuses the limited user
// what RBAC has not granted, comes back after a kill on the same port and
// etcd, and etcd can be compacted through its HTTP API.
func TestKube(t *testing.T) {
	k := SharedKube(t)
	t.Cleanup(StopSharedKube)
	hc := k.HTTPClient()
	if err := getOK(hc, k.URL+"/api/v1/namespaces/default", k.Token(KubeAdmin)); err != nil {
		t.Fatalf("admin: %v", err)
	}
	err := getOK(hc, k.URL+"/api/v1/namespaces/default", k.Token(KubeLimited))
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("limited user without a binding: %v, want 403", err)
	}
	if err := k.CompactEtcd(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := k.RestartAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := getOK(hc, k.URL+"/api/v1/namespaces/default", k.Token(KubeAdmin)); err != nil {
		t.Fatalf("admin after a restart: %v", err)
	}
}
