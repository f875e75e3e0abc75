package dockerfile

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// edit inserts text at a byte offset of the source.
type edit struct {
	off  int
	text string
}

// Rewrite inserts "@<digest>" after each image reference that digests
// names, leaving every other byte as it was, and checks that BuildKit's
// parser reads the result as the same Dockerfile with the digests added.
func (df *File) Rewrite(digests map[*Site]string) ([]byte, error) {
	out, err := df.insertDigests(digests)
	if err != nil {
		return nil, err
	}
	if err := df.checkRewrite(out, digests); err != nil {
		return nil, err
	}
	return out, nil
}

// checkRewrite parses the rewritten source out and compares its sites
// with df's: the same kinds on the same lines, each with its digest.
func (df *File) checkRewrite(out []byte, digests map[*Site]string) error {
	again, err := Parse(out, df.Name)
	if err != nil {
		return fmt.Errorf("buildkit: the rewritten Dockerfile does not parse: %w", err)
	}
	if len(again.Sites) != len(df.Sites) {
		return fmt.Errorf("buildkit: the rewritten Dockerfile has %d image references, the original %d", len(again.Sites), len(df.Sites))
	}
	for i, s := range df.Sites {
		want := s.Raw
		if d, ok := digests[s]; ok {
			want += "@" + d
		}
		if got := again.Sites[i]; got.Raw != want || got.kind != s.kind || got.Line() != s.Line() {
			return df.errorf(s.Line(), "rewriting %q gave %q, want %q", s.Raw, got.Raw, want)
		}
	}
	return nil
}

// insertDigests inserts "@<digest>" after each reference digests names.
func (df *File) insertDigests(digests map[*Site]string) ([]byte, error) {
	var edits []edit
	for _, s := range df.Sites {
		d, ok := digests[s]
		if !ok {
			continue
		}
		off, err := df.refEnd(s)
		if err != nil {
			return nil, err
		}
		edits = append(edits, edit{off: off, text: "@" + d})
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.off - b.off })
	var out bytes.Buffer
	prev := 0
	for _, e := range edits {
		out.Write(df.src[prev:e.off])
		out.WriteString(e.text)
		prev = e.off
	}
	out.Write(df.src[prev:])
	return out.Bytes(), nil
}

// refEnd is the source offset just after the reference Site s names: where
// "@sha256:..." goes.
func (df *File) refEnd(s *Site) (int, error) {
	t, err := df.text(s.node)
	if err != nil {
		return 0, err
	}
	cmd, flags, args := splitInstruction(t.s, 0, df.escape)
	if s.onbuild {
		if !strings.EqualFold(cmd, "onbuild") {
			return 0, df.errorf(s.Line(), "expected ONBUILD, found %s", cmd)
		}
		cmd, flags, args = splitInstruction(t.s, args, df.escape)
	}
	fail := func(what string) (int, error) {
		return 0, df.errorf(s.Line(), "cannot find %s %q in %q to rewrite it", what, s.Raw, t.s)
	}
	// at maps "just after text byte i" to a source offset.
	at := func(i int) int { return t.off[i] + 1 }
	switch s.kind {
	case siteFrom:
		end := args
		for end < len(t.s) && !isBuildKitSpace(t.s[end]) {
			end++
		}
		if end == args || t.s[args:end] != s.Raw {
			return fail("FROM")
		}
		return at(end - 1), nil
	case siteCopyFrom:
		for _, f := range flags {
			if v, ok := strings.CutPrefix(f.val, "--from="); ok && v == s.Raw {
				return at(f.pos[len(f.pos)-1]), nil
			}
		}
		return fail("COPY --from")
	case siteMountFrom:
		n := 0
		for _, f := range flags {
			spec, ok := strings.CutPrefix(f.val, "--mount=")
			if !ok {
				continue
			}
			if n++; n-1 != s.mount {
				continue
			}
			end, ok := csvFromEnd(spec, s.Raw)
			if !ok {
				break
			}
			k := len("--mount=") + end // index in f.val just after the value
			return at(f.pos[k-1]), nil
		}
		return fail("RUN --mount from")
	}
	return fail("reference")
}
