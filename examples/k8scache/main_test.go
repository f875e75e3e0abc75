package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestK8sCache(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out, 12, 3, 200); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"uncached dynamic client", "12", "k8sclient, TTL 5m", "List all + filter", "JobExists"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
