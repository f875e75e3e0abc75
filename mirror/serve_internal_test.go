package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

// A verifying reader that fails at its end must leave every response one
// byte short, a range ending long before the end too: the client never
// sees a complete body of bad bytes.
func TestCopyVerifiedCutsOnError(t *testing.T) {
	bad := errors.New("digest mismatch")
	data := []byte("abcdefghij")
	for _, r := range []struct{ start, n int64 }{{0, 10}, {0, 1}, {2, 3}, {9, 1}, {5, 5}} {
		t.Run(fmt.Sprintf("%d+%d", r.start, r.n), func(t *testing.T) {
			var out bytes.Buffer
			src := io.MultiReader(bytes.NewReader(data), iotest.ErrReader(bad))
			if err := copyVerified(&out, src, r.start, r.n); !errors.Is(err, bad) {
				t.Fatalf("err %v, want %v", err, bad)
			}
			if want := data[r.start : r.start+r.n-1]; !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("wrote %q, want %q: the last byte held back", out.Bytes(), want)
			}
			out.Reset()
			err := copyVerified(&out, iotest.OneByteReader(bytes.NewReader(data)), r.start, r.n)
			if want := data[r.start : r.start+r.n]; err != nil || !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("clean copy: %q %v, want %q", out.Bytes(), err, want)
			}
		})
	}
}
