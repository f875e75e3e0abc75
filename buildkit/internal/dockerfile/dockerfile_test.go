package dockerfile_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/buildcache/buildcache/buildkit/internal/dockerfile"
)

var (
	amd64 = ocispecs.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = ocispecs.Platform{OS: "linux", Architecture: "arm64"}
)

const multiStage = `ARG GO=1.22
FROM --platform=$BUILDPLATFORM golang:${GO} AS build
COPY --from=example.com/tools:1 /bin/t /t
FROM build AS unused
RUN --mount=type=bind,from=example.com/never,target=/x true
FROM alpine:3.20
COPY --from=build /out /out
`

// use is what a test compares of a dockerfile.Use.
type use struct {
	Ref, Platform, Stage string
	Line                 int
}

func evaluate(t *testing.T, src string, tg dockerfile.Target) []use {
	t.Helper()
	df, err := dockerfile.Parse([]byte(src), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	uses, err := df.Evaluate(tg)
	if err != nil {
		t.Fatal(err)
	}
	var out []use
	for _, u := range uses {
		out = append(out, use{u.Named.String(), u.Platform.Architecture, u.Stage.Label(), u.Site.Line()})
	}
	return out
}

func TestEvaluate(t *testing.T) {
	got := evaluate(t, multiStage, dockerfile.Target{Platform: arm64, BuildPlatform: amd64})
	want := []use{
		{"docker.io/library/golang:1.22", "amd64", "build", 2}, // FROM --platform=$BUILDPLATFORM
		{"example.com/tools:1", "arm64", "build", 3},           // COPY --from: the target platform
		{"docker.io/library/alpine:3.20", "arm64", "2", 6},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Evaluate (-want +got):\n%s", diff)
	}

	// The unused stage's mount counts once it is the target; a build arg
	// sets the declared ARG.
	got = evaluate(t, multiStage, dockerfile.Target{Platform: amd64, BuildPlatform: amd64, Stage: "UNUSED", BuildArgs: map[string]string{"GO": "1.23"}})
	want = []use{
		{"docker.io/library/golang:1.23", "amd64", "build", 2},
		{"example.com/tools:1", "amd64", "build", 3},
		{"example.com/never:latest", "amd64", "unused", 5},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Evaluate of the stage unused (-want +got):\n%s", diff)
	}
}

func TestEvaluateErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		src    string
		stage  string
		is     error
		substr string
	}{
		"undeclared arg": {"FROM alpine:$V\n", "", dockerfile.ErrUndefinedArg, "$V"},
		"empty base":     {"ARG V\nFROM $V\n", "", dockerfile.ErrUndefinedArg, "empty"},
		"unknown target": {"FROM alpine AS a\n", "b", dockerfile.ErrInvalid, `"b" is not defined`},
		"bad index":      {"FROM alpine\nCOPY --from=3 / /\n", "", dockerfile.ErrInvalid, "invalid stage index"},
		"stage case":     {"FROM alpine AS base\nFROM Base\n", "", dockerfile.ErrInvalid, `write "base"`},
	} {
		t.Run(name, func(t *testing.T) {
			df, err := dockerfile.Parse([]byte(tc.src), "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			_, err = df.Evaluate(dockerfile.Target{Platform: amd64, BuildPlatform: amd64, Stage: tc.stage})
			var le *dockerfile.LineError
			if !errors.Is(err, tc.is) || !errors.As(err, &le) || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("Evaluate = %v, want a LineError that is %v and says %q", err, tc.is, tc.substr)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, src := range []string{"", "RUN true\n", "# only a comment\n"} {
		if _, err := dockerfile.Parse([]byte(src), "Dockerfile"); !errors.Is(err, dockerfile.ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", src, err)
		}
	}
}

func TestRewrite(t *testing.T) {
	src := "FROM  alpine:3.20 AS a\n" +
		"COPY --from=example.com/tools:1 \\\n  /t /t\n" +
		"RUN --mount=type=bind,\"from=example.com/x\",target=/x true\n"
	df, err := dockerfile.Parse([]byte(src), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	digests := map[*dockerfile.Site]string{}
	for _, s := range df.Sites {
		digests[s] = "sha256:" + strings.Repeat("a", 64)
	}
	out, err := df.Rewrite(digests)
	if err != nil {
		t.Fatal(err)
	}
	d := "@sha256:" + strings.Repeat("a", 64)
	want := "FROM  alpine:3.20" + d + " AS a\n" +
		"COPY --from=example.com/tools:1" + d + " \\\n  /t /t\n" +
		"RUN --mount=type=bind,\"from=example.com/x" + d + "\",target=/x true\n"
	if string(out) != want {
		t.Errorf("Rewrite:\n%s\nwant:\n%s", out, want)
	}
	// No digests: the source, byte for byte.
	if out, err := df.Rewrite(nil); err != nil || string(out) != src {
		t.Errorf("Rewrite(nil) = %q, %v; want the source", out, err)
	}
}

func TestContextNames(t *testing.T) {
	df, err := dockerfile.Parse([]byte("FROM alpine\nFROM ghcr.io/o/app:1\n"), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	uses, err := df.Evaluate(dockerfile.Target{Platform: arm64, BuildPlatform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range uses {
		got = append(got, dockerfile.ContextKey(u.Named, u.Platform))
	}
	// Only the last stage is built, and it does not use the first.
	if diff := cmp.Diff([]string{"context:ghcr.io/o/app:1::linux/arm64"}, got); diff != "" {
		t.Errorf("context keys (-want +got):\n%s", diff)
	}
	if n, ok := dockerfile.StageContextName("build"); !ok || n != "build" {
		t.Errorf("StageContextName(build) = %q, %v", n, ok)
	}
}
