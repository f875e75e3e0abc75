package cache_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/buildcache/buildcache/cache"
)

const validHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// isValidDigest is the rule written out independently of the code under
// test: "sha256:" and exactly 64 characters from [0-9a-f].
func isValidDigest(alg, hex string) bool {
	if alg != "sha256" || len(hex) != 64 {
		return false
	}
	for _, c := range []byte(hex) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func TestParseDigest(t *testing.T) {
	tests := []struct {
		in string
		// wantMsg are substrings the error must contain: it names what was
		// wrong. Empty: the digest is valid.
		wantMsg []string
	}{
		{in: "sha256:" + validHex},
		{in: "", wantMsg: []string{`""`, "want sha256:<64 hex digits>"}},
		{in: "sha256", wantMsg: []string{`"sha256"`, "want sha256:<64 hex digits>"}},
		{in: validHex, wantMsg: []string{"want sha256:<64 hex digits>"}},
		{in: ":", wantMsg: []string{"empty digest"}},
		{in: "sha256:", wantMsg: []string{"want 64 hex digits, got 0 bytes"}},
		{in: "sha256:" + validHex[:63], wantMsg: []string{"want 64 hex digits, got 63 bytes"}},
		{in: "sha256:" + validHex + "0", wantMsg: []string{"want 64 hex digits, got 65 bytes"}},
		{in: "sha256:" + strings.ToUpper(validHex), wantMsg: []string{"lower-case"}},
		{in: "sha256:" + validHex[:63] + "g", wantMsg: []string{"'g'", "at 63", "not a hex digit"}},
		{in: "sha256:" + validHex[:10] + "/" + validHex[11:], wantMsg: []string{"'/'", "at 10", "not a hex digit"}},
		{in: "sha256:../../etc/passwd", wantMsg: []string{`"sha256:../../etc/passwd"`, "want 64 hex digits, got 16 bytes"}},
		{in: "sha256:" + strings.Repeat("../", 21) + "x", wantMsg: []string{"'.'", "at 0", "not a hex digit"}},
		{in: "SHA256:" + validHex, wantMsg: []string{`algorithm "SHA256" is not supported, only sha256`}},
		{in: "sha512:" + validHex + validHex, wantMsg: []string{`algorithm "sha512" is not supported`}},
		{in: "md5:0123456789abcdef0123456789abcdef", wantMsg: []string{`algorithm "md5" is not supported`}},
		{in: ":" + validHex, wantMsg: []string{`algorithm "" is not supported`}},
		{in: "sha256:" + validHex + ":" + validHex, wantMsg: []string{"got 129 bytes"}},
		// Hostile input is clipped, not echoed at any length.
		{in: "sha256:" + strings.Repeat("a", 10000), wantMsg: []string{"...", "got 10000 bytes"}},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			h, err := cache.ParseDigest(tt.in)
			if tt.wantMsg == nil {
				if err != nil {
					t.Fatalf("ParseDigest(%q) = %v, want ok", tt.in, err)
				}
				if h.String() != tt.in {
					t.Fatalf("ParseDigest(%q).String() = %q", tt.in, h.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseDigest(%q) = %v, want an error", tt.in, h)
			}
			if !errors.Is(err, cache.ErrInvalidDigest) {
				t.Errorf("ParseDigest(%q) = %v, want it to wrap ErrInvalidDigest", tt.in, err)
			}
			if h != (v1.Hash{}) {
				t.Errorf("ParseDigest(%q) returned %v with its error, want the zero Hash", tt.in, h)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("ParseDigest(%q) error %q does not say %q", tt.in, err, m)
				}
			}
			if len(err.Error()) > 300 {
				t.Errorf("ParseDigest error is %d bytes long; hostile input must be clipped", len(err.Error()))
			}
		})
	}
}

func TestValidateDigest(t *testing.T) {
	tests := []struct {
		name    string
		d       v1.Hash
		wantMsg string // "" means valid
	}{
		{"valid", v1.Hash{Algorithm: "sha256", Hex: validHex}, ""},
		{"zero", v1.Hash{}, "empty digest"},
		{"no hex", v1.Hash{Algorithm: "sha256"}, "got 0 bytes"},
		{"no algorithm", v1.Hash{Hex: validHex}, `algorithm "" is not supported`},
		{"traversal", v1.Hash{Algorithm: "sha256", Hex: "../../etc/passwd"}, "want 64 hex digits"},
		{"traversal of 64 bytes", v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("../", 21) + "a"}, "not a hex digit"},
		{"absolute path", v1.Hash{Algorithm: "sha256", Hex: "/" + validHex[1:]}, `'/' at 0 is not a hex digit`},
		{"NUL", v1.Hash{Algorithm: "sha256", Hex: validHex[:63] + "\x00"}, "byte 0x00 at 63 is not a hex digit"},
		{"upper case", v1.Hash{Algorithm: "sha256", Hex: "A" + validHex[1:]}, "hex digits must be lower-case"},
		{"algorithm with a path", v1.Hash{Algorithm: "../sha256", Hex: validHex}, `algorithm "../sha256" is not supported`},
		{"upper-case algorithm", v1.Hash{Algorithm: "SHA256", Hex: validHex}, `algorithm "SHA256" is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := cache.ValidateDigest(tt.d)
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("ValidateDigest(%#v) = %v, want nil", tt.d, err)
				}
				return
			}
			if !errors.Is(err, cache.ErrInvalidDigest) {
				t.Fatalf("ValidateDigest(%#v) = %v, want ErrInvalidDigest", tt.d, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ValidateDigest(%#v) = %q, want it to say %q", tt.d, err, tt.wantMsg)
			}
		})
	}
}

// FuzzParseDigest: an accepted digest round-trips and is safe as a file
// name; a rejected one is ErrInvalidDigest. Run with
// go test -run XXX -fuzz FuzzParseDigest ./cache/
func FuzzParseDigest(f *testing.F) {
	for _, s := range []string{
		"sha256:" + validHex,
		"sha256:" + strings.ToUpper(validHex),
		"sha256:../../etc/passwd",
		"sha256:" + strings.Repeat("../", 21) + "a",
		"sha256:/" + validHex[1:],
		"sha256:" + validHex[:63] + "\x00",
		"sha256:" + validHex + "\n",
		"sha256:" + validHex[:32] + "/" + validHex[33:],
		"sha256:" + validHex[:62] + "..",
		"sha256::" + validHex[1:],
		"sha512:" + validHex + validHex,
		"SHA256:" + validHex,
		":" + validHex,
		"sha256",
		":",
		"",
		validHex,
		"sha256:é" + validHex[2:],
	} {
		f.Add(s)
	}
	base := filepath.Join(string(filepath.Separator), "var", "cache", "buildcache")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := cache.ParseDigest(s)
		alg, hex, _ := strings.Cut(s, ":")
		if err != nil {
			if !errors.Is(err, cache.ErrInvalidDigest) {
				t.Fatalf("ParseDigest(%q) = %v, not ErrInvalidDigest", s, err)
			}
			if isValidDigest(alg, hex) {
				t.Fatalf("ParseDigest(%q) rejected a valid digest: %v", s, err)
			}
			return
		}
		if !isValidDigest(alg, hex) {
			t.Fatalf("ParseDigest(%q) accepted an invalid digest as %#v", s, h)
		}
		if h.String() != s {
			t.Fatalf("ParseDigest(%q).String() = %q, want the input back", s, h.String())
		}
		if h2, err := cache.ParseDigest(h.String()); err != nil || h2 != h {
			t.Fatalf("ParseDigest(String()) = %v, %v; want %v", h2, err, h)
		}
		if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
			t.Fatalf("ParseDigest(%q) = %#v: not sha256 and 64 lower-case hex digits", s, h)
		}
		if err := cache.ValidateDigest(h); err != nil {
			t.Fatalf("ValidateDigest rejects what ParseDigest accepted: %v", err)
		}
		p := filepath.Join(base, "blobs", "sha256", h.Hex)
		rel, err := filepath.Rel(base, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
			t.Fatalf("digest %q maps to %q, outside %q (rel %q, %v)", s, p, base, rel, err)
		}
		if filepath.Dir(p) != filepath.Join(base, "blobs", "sha256") || filepath.Base(p) != h.Hex {
			t.Fatalf("digest %q maps to %q, not a file directly in blobs/sha256", s, p)
		}
	})
}

// FuzzValidateDigest compares ValidateDigest with the rule written out.
func FuzzValidateDigest(f *testing.F) {
	f.Add("sha256", validHex)
	f.Add("sha256", "../../etc/passwd")
	f.Add("sha256", strings.ToUpper(validHex))
	f.Add("", "")
	f.Add("sha256", "")
	f.Add("../sha256", validHex)
	f.Fuzz(func(t *testing.T, alg, hex string) {
		err := cache.ValidateDigest(v1.Hash{Algorithm: alg, Hex: hex})
		if want := isValidDigest(alg, hex); want != (err == nil) {
			t.Fatalf("ValidateDigest(%q, %q) = %v, want valid=%v", alg, hex, err, want)
		}
		if err != nil && !errors.Is(err, cache.ErrInvalidDigest) {
			t.Fatalf("ValidateDigest(%q, %q) = %v, not ErrInvalidDigest", alg, hex, err)
		}
	})
}

func TestPullPolicyString(t *testing.T) {
	for _, tt := range []struct {
		p    cache.PullPolicy
		want string
	}{
		{cache.PullAlways, "always"},
		{cache.PullIfNotPresent, "if-not-present"},
		{cache.PullNever, "never"},
		{cache.PullPolicy(7), "PullPolicy(7)"},
		{cache.PullPolicy(-1), "PullPolicy(-1)"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("PullPolicy(%d).String() = %q, want %q", int(tt.p), got, tt.want)
		}
	}
	if cache.PullPolicy(0) != cache.PullAlways {
		t.Error("the zero PullPolicy is not PullAlways, the documented default")
	}
}

func TestParsePullPolicy(t *testing.T) {
	for _, p := range []cache.PullPolicy{cache.PullAlways, cache.PullIfNotPresent, cache.PullNever} {
		got, err := cache.ParsePullPolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePullPolicy(%q) = %v, %v; want %v (round trip)", p.String(), got, err, p)
		}
	}
	// Kubernetes spells them in CamelCase.
	for s, want := range map[string]cache.PullPolicy{"Always": cache.PullAlways, "IfNotPresent": cache.PullIfNotPresent, "Never": cache.PullNever} {
		if got, err := cache.ParsePullPolicy(s); err != nil || got != want {
			t.Errorf("ParsePullPolicy(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "ALWAYS", "sometimes", "PullPolicy(7)", " never"} {
		_, err := cache.ParsePullPolicy(s)
		if err == nil {
			t.Errorf("ParsePullPolicy(%q) accepted it", s)
			continue
		}
		for _, m := range []string{"unknown pull policy", "always, if-not-present or never"} {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("ParsePullPolicy(%q) error %q does not say %q", s, err, m)
			}
		}
	}
}

func TestSourceString(t *testing.T) {
	for _, tt := range []struct {
		s    cache.Source
		want string
	}{
		{cache.Hit, "hit"},
		{cache.Revalidated, "revalidated"},
		{cache.Pulled, "pulled"},
		{cache.Stale, "stale"},
		{cache.Source(9), "Source(9)"},
	} {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Source(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

func TestStatsHitRatio(t *testing.T) {
	for _, tt := range []struct {
		s    cache.Stats
		want float64
	}{
		{cache.Stats{}, 0},
		{cache.Stats{Misses: 5}, 0},
		{cache.Stats{Hits: 5}, 1},
		{cache.Stats{Hits: 3, Misses: 1, BytesOut: 1 << 40}, 0.75},
	} {
		if got := tt.s.HitRatio(); got != tt.want {
			t.Errorf("%+v.HitRatio() = %v, want %v", tt.s, got, tt.want)
		}
	}
}

// statsFields returns the uint64 fields of a Stats by name.
func statsFields(s cache.Stats) map[string]uint64 {
	m := map[string]uint64{}
	v := reflect.ValueOf(s)
	for i := 0; i < v.NumField(); i++ {
		m[v.Type().Field(i).Name] = v.Field(i).Uint()
	}
	return m
}

func TestStatsAddSumsEveryField(t *testing.T) {
	// Give every field a distinct value by reflection, so a field added to
	// Stats later and forgotten in Add fails here.
	var a, b cache.Stats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	for i := 0; i < va.NumField(); i++ {
		va.Field(i).SetUint(uint64(1 + i))
		vb.Field(i).SetUint(uint64(100 * (1 + i)))
	}
	sum := statsFields(a.Add(b))
	for name, got := range sum {
		want := statsFields(a)[name] + statsFields(b)[name]
		if got != want {
			t.Errorf("Add: %s = %d, want %d", name, got, want)
		}
	}
	if a.Add(cache.Stats{}) != a || (cache.Stats{}).Add(a) != a {
		t.Error("the zero Stats is not Add's identity")
	}
}

func TestCountersSnapshot(t *testing.T) {
	var nilCounters *cache.Counters
	if got := nilCounters.Snapshot(); got != (cache.Stats{}) {
		t.Fatalf("nil *Counters.Snapshot() = %+v, want zero", got)
	}
	var zero cache.Counters
	if got := zero.Snapshot(); got != (cache.Stats{}) {
		t.Fatalf("zero Counters.Snapshot() = %+v, want zero", got)
	}

	// Counters and Stats must have the same fields, and Snapshot must copy
	// each one: bump the i-th counter by i+1 through reflection.
	var c cache.Counters
	cv := reflect.ValueOf(&c).Elem()
	st := reflect.TypeOf(cache.Stats{})
	if cv.NumField() != st.NumField() {
		t.Fatalf("Counters has %d fields, Stats %d", cv.NumField(), st.NumField())
	}
	want := map[string]uint64{}
	for i := 0; i < cv.NumField(); i++ {
		name := cv.Type().Field(i).Name
		if _, ok := st.FieldByName(name); !ok {
			t.Fatalf("Counters.%s has no Stats field", name)
		}
		cv.Field(i).Addr().MethodByName("Add").Call([]reflect.Value{reflect.ValueOf(uint64(i + 1))})
		want[name] = uint64(i + 1)
	}
	if got := statsFields(c.Snapshot()); !reflect.DeepEqual(got, want) {
		t.Fatalf("Snapshot() = %v, want %v", got, want)
	}

	// Lock-free: concurrent adds and snapshots are race-free and lose nothing.
	var live cache.Counters
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				live.Hits.Add(1)
				live.BytesOut.Add(10)
				_ = live.Snapshot().HitRatio()
			}
		}()
	}
	wg.Wait()
	if s := live.Snapshot(); s.Hits != 8000 || s.BytesOut != 80000 || s.HitRatio() != 1 {
		t.Fatalf("after concurrent adds Snapshot() = %+v", s)
	}
}

// ParseContentDigest takes sha512 too, with the same care for anything
// that is not a digest; ParseDigest, what stores key by, stays sha256.
func TestParseContentDigest(t *testing.T) {
	hex512 := validHex + validHex
	for _, tt := range []struct {
		in      string
		wantMsg string // "" means valid
	}{
		{"sha256:" + validHex, ""},
		{"sha512:" + hex512, ""},
		{"sha512:" + validHex, "want 128 hex digits, got 64 bytes"},
		{"sha512:" + hex512 + "0", "want 128 hex digits, got 129 bytes"},
		{"sha512:" + strings.ToUpper(hex512), "lower-case"},
		{"sha512:" + hex512[:127] + "/", "'/' at 127 is not a hex digit"},
		{"sha512:../../etc/passwd", "want 128 hex digits, got 16 bytes"},
		{"sha512:" + strings.Repeat("../", 42) + "ab", "'.' at 0 is not a hex digit"},
		{"sha384:" + hex512[:96], `algorithm "sha384" is not supported, only sha256 and sha512`},
		{"SHA512:" + hex512, `algorithm "SHA512" is not supported`},
		{hex512, "want sha256:<64 hex digits> or sha512:<128 hex digits>"},
		{":", "empty digest"},
	} {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			h, err := cache.ParseContentDigest(tt.in)
			if tt.wantMsg == "" {
				if err != nil || h.String() != tt.in {
					t.Fatalf("ParseContentDigest(%q) = %v, %v; want it back", tt.in, h, err)
				}
				if err := cache.ValidateContentDigest(h); err != nil {
					t.Fatalf("ValidateContentDigest rejects what ParseContentDigest accepted: %v", err)
				}
				return
			}
			if !errors.Is(err, cache.ErrInvalidDigest) || h != (v1.Hash{}) {
				t.Fatalf("ParseContentDigest(%q) = %v, %v; want ErrInvalidDigest", tt.in, h, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ParseContentDigest(%q) = %q, want it to say %q", tt.in, err, tt.wantMsg)
			}
		})
	}
	if _, err := cache.ParseDigest("sha512:" + hex512); !errors.Is(err, cache.ErrInvalidDigest) {
		t.Errorf("ParseDigest accepted sha512 (%v): stores keep sha256 only", err)
	}
}
