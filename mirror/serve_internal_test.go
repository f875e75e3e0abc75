package mirror

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// A verifying reader that fails at its end must leave the response one
// byte short: the client never sees a complete body of bad bytes.
func TestCopyHoldingLastCutsOnError(t *testing.T) {
	bad := errors.New("digest mismatch")
	var out bytes.Buffer
	src := io.MultiReader(bytes.NewReader([]byte("abcdef")), iotest.ErrReader(bad))
	if err := copyHoldingLast(&out, src); !errors.Is(err, bad) {
		t.Fatalf("err %v, want %v", err, bad)
	}
	if out.String() != "abcde" {
		t.Fatalf("wrote %q, want the last byte held back", out.String())
	}
	out.Reset()
	if err := copyHoldingLast(&out, iotest.OneByteReader(bytes.NewReader([]byte("abcdef")))); err != nil || out.String() != "abcdef" {
		t.Fatalf("clean copy: %q %v", out.String(), err)
	}
}
