package verify

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var errBad = errors.New("bad")

func digestOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func TestReader(t *testing.T) {
	data := bytes.Repeat([]byte("layer"), 10000)
	d := digestOf(data)
	flipped := bytes.Clone(data)
	flipped[100] ^= 1
	tests := []struct {
		name    string
		input   []byte
		size    int64
		wantErr bool
	}{
		{"match", data, int64(len(data)), false},
		{"match, size unchecked", data, -1, false},
		{"flipped byte", flipped, int64(len(data)), true},
		{"truncated", data[:len(data)-1], int64(len(data)), true},
		{"truncated, size unchecked", data[:len(data)-1], -1, true},
		{"too long", append(bytes.Clone(data), 'x'), int64(len(data)), true},
		{"wrong size given", data, int64(len(data)) + 1, true},
		{"empty vs data", nil, int64(len(data)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := NewReader(bytes.NewReader(tc.input), d, tc.size, errBad)
			got, err := io.ReadAll(v)
			if tc.wantErr {
				if !errors.Is(err, errBad) {
					t.Fatalf("ReadAll error = %v, want one wrapping errBad", err)
				}
				if v.Verified() {
					t.Fatal("Verified() = true after a mismatch")
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			if !bytes.Equal(got, data) || !v.Verified() {
				t.Fatal("data not returned intact or not verified")
			}
		})
	}
}

func TestReaderStopsAtOversize(t *testing.T) {
	// An endless stream must fail once it passes the expected size, not hang.
	d := digestOf([]byte("abc"))
	v := NewReader(endless{}, d, 3, errBad)
	if _, err := io.Copy(io.Discard, v); !errors.Is(err, errBad) {
		t.Fatalf("got %v, want errBad", err)
	}
	if v.N() > 4 {
		t.Fatalf("read %d bytes of an endless stream, want at most size+1", v.N())
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func TestDrain(t *testing.T) {
	data := []byte("hello")
	if err := NewReader(bytes.NewReader(data), digestOf(data), 5, errBad).Drain(); err != nil {
		t.Fatal(err)
	}
	if err := NewReader(bytes.NewReader([]byte("hellO")), digestOf(data), 5, errBad).Drain(); !errors.Is(err, errBad) {
		t.Fatalf("Drain of bad data = %v", err)
	}
}

// A sha512 digest is checked with sha512; an algorithm the reader cannot
// hash is a mismatch, never bytes passed on unchecked.
func TestReaderSHA512(t *testing.T) {
	blob := []byte("sha512 content")
	s := sha512.Sum512(blob)
	d := v1.Hash{Algorithm: "sha512", Hex: hex.EncodeToString(s[:])}
	if _, err := io.ReadAll(NewReader(bytes.NewReader(blob), d, int64(len(blob)), errBad)); err != nil {
		t.Fatalf("sha512 blob: %v", err)
	}
	wrong := append([]byte{}, blob...)
	wrong[0] ^= 1
	if _, err := io.ReadAll(NewReader(bytes.NewReader(wrong), d, -1, errBad)); !errors.Is(err, errBad) {
		t.Fatalf("altered sha512 blob: %v, want the mismatch", err)
	}
	md5 := v1.Hash{Algorithm: "md5", Hex: "00"}
	if n, err := NewReader(bytes.NewReader(blob), md5, -1, errBad).Read(make([]byte, 64)); n != 0 || !errors.Is(err, errBad) {
		t.Fatalf("md5 digest: read %d bytes, %v; want none and the mismatch", n, err)
	}
}
