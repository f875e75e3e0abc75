package buildkit

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// This file reads a Dockerfile the way BuildKit v0.33.1's dockerfile
// frontend (frontend/dockerfile/dockerfile2llb) does, with BuildKit's own
// parser, to find out which external images a build uses and for which
// platform, and rewrites references in place. Where BuildKit's behaviour
// is surprising it is mirrored, not corrected, and the comment says so:
// pinning must name exactly the images BuildKit will ask for.

// emptyImage is the FROM name that means "no base image".
const emptyImage = "scratch"

// siteKind says where in an instruction an image reference is written.
type siteKind int

const (
	siteFrom      siteKind = iota // FROM <image>
	siteCopyFrom                  // COPY --from=<image>
	siteMountFrom                 // RUN --mount=...,from=<image>
)

// site is one place in the Dockerfile where an image may be named. Whether
// it names an image, a stage or scratch is only known per platform, after
// ARG expansion.
type site struct {
	node    *parser.Node // the instruction; for ONBUILD, the ONBUILD line
	kind    siteKind
	mount   int  // siteMountFrom: index among the instruction's --mount flags
	onbuild bool // the reference is in an ONBUILD trigger
	raw     string
}

func (s *site) line() int { return s.node.StartLine }

// dfStage is a FROM and its instructions.
type dfStage struct {
	index    int
	name     string // lower case, as BuildKit's parser makes it; "" if unnamed
	baseName string // as written, before ARG expansion
	platform string // --platform as written
	from     *site
	copies   []*site // COPY --from and RUN --mount from, in order
	onbuilds []*site // the same, inside ONBUILD triggers
}

// label names the stage in reports: its name or its index.
func (s *dfStage) label() string {
	if s.name != "" {
		return s.name
	}
	return strconv.Itoa(s.index)
}

// dockerfile is a parsed Dockerfile that keeps its source for rewriting.
type dockerfile struct {
	name     string
	src      []byte
	lines    []int // byte offset of each physical line; lines[0] is line 1
	escape   byte
	metaArgs []instructions.ArgCommand
	stages   []*dfStage
	sites    []*site // every site in source order
}

// LineError is an error about one line of a Dockerfile. Its message starts
// with "Dockerfile:<line>:" as BuildKit's do, so a user can find the line;
// errors.Is and errors.As reach the error it wraps.
type LineError struct {
	File string // "Dockerfile" unless WithFilename says otherwise
	Line int    // 1-based; 0 if the error concerns no single line
	Err  error
}

func (e *LineError) Error() string {
	if e.Line <= 0 {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

func (df *dockerfile) errorf(line int, format string, args ...any) error {
	return &LineError{File: df.name, Line: line, Err: fmt.Errorf(format, args...)}
}

// invalid is an ErrInvalidDockerfile about a line.
func (df *dockerfile) invalid(line int, format string, args ...any) error {
	return &LineError{File: df.name, Line: line, Err: fmt.Errorf("%w: %s", ErrInvalidDockerfile, fmt.Sprintf(format, args...))}
}

// parseDockerfile parses src with BuildKit's parser and instruction
// parser, recording every place an image may be named.
func parseDockerfile(src []byte, name string) (*dockerfile, error) {
	df := &dockerfile{name: name, src: src}
	if len(bytes.TrimSpace(src)) == 0 {
		return nil, df.invalid(0, "the Dockerfile is empty")
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, df.invalid(errorLine(err), "%v", stripLocation(err))
	}
	df.escape = byte(res.EscapeToken)
	df.lines = append(df.lines, 0)
	for i, b := range src {
		if b == '\n' && i+1 < len(src) {
			df.lines = append(df.lines, i+1)
		}
	}
	// instructions.Parse, one node at a time so that every stage and
	// command keeps its node.
	var cur *dfStage
	for _, n := range res.AST.Children {
		cmd, err := instructions.ParseInstruction(n)
		if err != nil {
			return nil, df.invalid(n.StartLine, "%v", stripLocation(err))
		}
		if cur == nil {
			if a, ok := cmd.(*instructions.ArgCommand); ok {
				df.metaArgs = append(df.metaArgs, *a)
				continue
			}
		}
		switch c := cmd.(type) {
		case *instructions.Stage:
			cur = &dfStage{index: len(df.stages), name: c.Name, baseName: c.BaseName, platform: c.Platform}
			cur.from = df.addSite(n, siteFrom, 0, false, c.BaseName)
			df.stages = append(df.stages, cur)
		case instructions.Command:
			if cur == nil {
				return nil, df.invalid(n.StartLine, "%s before the first FROM", strings.ToUpper(n.Value))
			}
			s, err := df.commandSites(n, c, false)
			if err != nil {
				return nil, err
			}
			cur.copies = append(cur.copies, s...)
			if ob, ok := c.(*instructions.OnbuildCommand); ok {
				s, err := df.onbuildSites(n, ob)
				if err != nil {
					return nil, err
				}
				cur.onbuilds = append(cur.onbuilds, s...)
			}
		default:
			return nil, df.invalid(n.StartLine, "%T is not a command", cmd)
		}
	}
	if len(df.stages) == 0 {
		return nil, df.invalid(0, "no FROM: the Dockerfile contains no stages to build")
	}
	return df, nil
}

func (df *dockerfile) addSite(n *parser.Node, kind siteKind, mount int, onbuild bool, raw string) *site {
	s := &site{node: n, kind: kind, mount: mount, onbuild: onbuild, raw: raw}
	df.sites = append(df.sites, s)
	return s
}

// commandSites records the COPY --from and RUN --mount from references of
// one command.
func (df *dockerfile) commandSites(n *parser.Node, c instructions.Command, onbuild bool) ([]*site, error) {
	var out []*site
	switch c := c.(type) {
	case *instructions.CopyCommand:
		if c.From != "" {
			out = append(out, df.addSite(n, siteCopyFrom, 0, onbuild, c.From))
		}
	case *instructions.RunCommand:
		for i, m := range instructions.GetMounts(c) {
			if m.From != "" {
				out = append(out, df.addSite(n, siteMountFrom, i, onbuild, m.From))
			}
		}
	}
	return out, nil
}

// onbuildSites parses an ONBUILD trigger as BuildKit does when a later
// stage uses this one as its base.
func (df *dockerfile) onbuildSites(n *parser.Node, ob *instructions.OnbuildCommand) ([]*site, error) {
	res, err := parser.Parse(strings.NewReader(ob.Expression))
	if err != nil || len(res.AST.Children) != 1 {
		return nil, df.invalid(n.StartLine, "ONBUILD %s: not a single instruction", ob.Expression)
	}
	c, err := instructions.ParseCommand(res.AST.Children[0])
	if err != nil {
		return nil, df.invalid(n.StartLine, "ONBUILD %s: %v", ob.Expression, stripLocation(err))
	}
	return df.commandSites(n, c, true)
}

// errorLine is the first line a BuildKit parser error names, or 0.
func errorLine(err error) int {
	var le *parser.LocationError
	if errors.As(err, &le) {
		for _, rs := range le.Locations {
			for _, r := range rs {
				if r.Start.Line > 0 {
					return r.Start.Line
				}
			}
		}
	}
	return 0
}

// stripLocation drops BuildKit's location wrapper, whose line our
// LineError already names.
func stripLocation(err error) error {
	var le *parser.LocationError
	if errors.As(err, &le) && le.Unwrap() != nil {
		return le.Unwrap()
	}
	return err
}

// argEnv is BuildKit's global ARG scope: ordered, replaceable.
type argEnv struct {
	keys []string
	vals map[string]string
}

func (e *argEnv) Get(k string) (string, bool) { v, ok := e.vals[k]; return v, ok }
func (e *argEnv) Keys() []string              { return e.keys }

func (e *argEnv) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

// builtinArgs are the ARGs BuildKit defines before the first FROM
// (dockerfile2llb's defaultArgs). A build arg of the same name overrides
// each of them.
func builtinArgs(build, target ocispecs.Platform, targetStage string, buildArgs map[string]string) *argEnv {
	if targetStage == "" {
		targetStage = "default"
	}
	env := &argEnv{vals: map[string]string{}}
	for _, kv := range [...][2]string{
		{"BUILDPLATFORM", platforms.Format(build)}, // Format, not FormatAll, as BuildKit does
		{"BUILDOS", build.OS},
		{"BUILDOSVERSION", build.OSVersion},
		{"BUILDARCH", build.Architecture},
		{"BUILDVARIANT", build.Variant},
		{"TARGETPLATFORM", platforms.FormatAll(target)},
		{"TARGETOS", target.OS},
		{"TARGETOSVERSION", target.OSVersion},
		{"TARGETARCH", target.Architecture},
		{"TARGETVARIANT", target.Variant},
		{"TARGETSTAGE", targetStage},
	} {
		v := kv[1]
		if ov, ok := buildArgs[kv[0]]; ok {
			v = ov
		}
		env.set(kv[0], v)
	}
	return env
}

// imageUse is one external image a build needs for one platform.
type imageUse struct {
	site     *site
	stage    *dfStage // the stage that uses it
	ref      string   // after ARG expansion
	named    reference.Named
	platform ocispecs.Platform // normalized
}

// evalStage is a stage after ARG expansion for one target platform.
type evalStage struct {
	*dfStage
	base      string             // expanded base name
	baseStage *evalStage         // FROM <earlier stage>
	platform  *ocispecs.Platform // FROM --platform, normalized
	deps      []evalDep
	unsetNote string // variables the base name found unset, for errors
}

type evalDep struct {
	site  *site
	stage *evalStage // nil: an image or scratch
	name  string
}

// evaluate works out, as the dockerfile frontend does for one target
// platform, which stages the target needs and which images they use.
func (df *dockerfile) evaluate(target, build ocispecs.Platform, o *pinOptions) ([]imageUse, error) {
	lex := shell.NewLex(rune(df.escape))
	targetStage := o.target
	if targetStage == "" {
		targetStage = df.stages[len(df.stages)-1].name
	}
	env := builtinArgs(build, target, targetStage, o.buildArgs)
	declared := map[string]bool{}
	for _, k := range env.keys {
		declared[k] = true
	}
	// buildMetaArgs: a build arg sets a declared ARG; otherwise its
	// default, expanded with what is defined so far. An ARG with neither
	// stays unset.
	for _, a := range df.metaArgs {
		for _, kv := range a.Args {
			declared[kv.Key] = true
			if v, ok := o.buildArgs[kv.Key]; ok {
				env.set(kv.Key, v)
				continue
			}
			if kv.Value == nil {
				continue
			}
			r, err := lex.ProcessWordWithMatches(*kv.Value, env)
			if err != nil {
				return nil, df.invalid(a.Location()[0].Start.Line, "ARG %s: %v", kv.Key, err)
			}
			env.set(kv.Key, r.Result)
		}
	}
	// expand expands word and also returns a note naming the variables it
	// found unset, for the error a bad result leads to.
	expand := func(line int, what, word string) (string, string, error) {
		if name, ok := undeclaredVar(word, df.escape, declared); ok {
			return "", "", df.errorf(line, "%w: %s %s uses $%s, which no ARG before the first FROM declares (build args apply only to declared ARGs)", ErrUndefinedArg, what, word, name)
		}
		r, err := lex.ProcessWordWithMatches(word, env)
		if err != nil {
			return "", "", df.invalid(line, "%s %s: %v", what, word, err)
		}
		note := unsetNote(r.Unmatched)
		if r.Result == "" {
			return "", "", df.errorf(line, "%w: %s %s is empty after ARG expansion%s", ErrUndefinedArg, what, word, note)
		}
		return r.Result, note, nil
	}

	all := make([]*evalStage, len(df.stages))
	byName := map[string]*evalStage{} // lower-case stage names
	for i, st := range df.stages {
		es := &evalStage{dfStage: st}
		line := st.from.line()
		base, note, err := expand(line, "FROM", st.baseName)
		if err != nil {
			return nil, err
		}
		es.base, es.unsetNote = base, note
		if st.platform != "" {
			pv, note, err := expand(line, "FROM --platform", st.platform)
			if err != nil {
				return nil, err
			}
			p, err := platforms.Parse(pv)
			if err != nil {
				return nil, df.invalid(line, "FROM --platform=%s: %v%s", st.platform, err, note)
			}
			p = platforms.Normalize(p)
			es.platform = &p
		}
		// BuildKit looks the expanded base name up among the earlier
		// stages exactly, against lower-case stage names: "FROM Base"
		// does not find the stage "base" (it becomes an image name, and
		// an invalid one).
		es.baseStage = byName[base]
		all[i] = es
		if st.name != "" {
			byName[st.name] = es
		}
	}
	var targetES *evalStage
	if o.target != "" {
		targetES = byName[strings.ToLower(o.target)]
		if targetES == nil {
			return nil, df.errorf(0, "%w: target stage %q is not defined (stages: %s)", ErrInvalidDockerfile, o.target, strings.Join(stageNames(df.stages), ", "))
		}
	} else {
		targetES = all[len(all)-1]
	}

	// COPY --from and RUN --mount from name a stage (by name, any case,
	// or by index: also later stages) or else an image.
	findStage := func(s *site) (*evalStage, error) {
		if s.kind == siteCopyFrom {
			if strings.ContainsAny(s.raw, "$") {
				r, _ := lex.ProcessWordWithMatches(s.raw, &argEnv{vals: map[string]string{}})
				if r.Result != s.raw {
					return nil, df.invalid(s.line(), "COPY --from=%s: variable expansion is not supported for --from; define a stage with FROM using a global ARG instead", s.raw)
				}
			}
			if idx, err := strconv.Atoi(s.raw); err == nil {
				if idx < 0 || idx >= len(all) {
					return nil, df.invalid(s.line(), "COPY --from=%d: invalid stage index", idx)
				}
				return all[idx], nil
			}
		}
		return byName[strings.ToLower(s.raw)], nil
	}
	for _, es := range all {
		for _, s := range es.copies {
			st, err := findStage(s)
			if err != nil {
				return nil, err
			}
			es.deps = append(es.deps, evalDep{site: s, stage: st, name: s.raw})
		}
		if es.baseStage != nil {
			for _, s := range es.baseStage.onbuilds {
				st, err := findStage(s)
				if err != nil {
					return nil, err
				}
				es.deps = append(es.deps, evalDep{site: s, stage: st, name: s.raw})
			}
		}
	}

	// The stages the target needs, in source order.
	reach := map[*evalStage]bool{}
	var walk func(*evalStage)
	walk = func(es *evalStage) {
		if reach[es] {
			return
		}
		reach[es] = true
		if es.baseStage != nil {
			walk(es.baseStage)
		}
		for _, d := range es.deps {
			if d.stage != nil {
				walk(d.stage)
			}
		}
	}
	walk(targetES)

	var uses []imageUse
	add := func(s *site, st *dfStage, ref, note string, p ocispecs.Platform) error {
		named, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			hint := note
			if _, ok := byName[strings.ToLower(ref)]; ok && s.kind == siteFrom {
				hint += fmt.Sprintf(" (BuildKit matches FROM stage names exactly: write %q for the stage)", strings.ToLower(ref))
			}
			return df.invalid(s.line(), "invalid image reference %q: %v%s", ref, err, hint)
		}
		uses = append(uses, imageUse{site: s, stage: st, ref: ref, named: reference.TagNameOnly(named), platform: p})
		return nil
	}
	for _, es := range all {
		if !reach[es] {
			continue
		}
		if es.baseStage == nil && es.base != emptyImage {
			p := target
			if es.platform != nil {
				p = *es.platform
			}
			if err := add(es.from, es.dfStage, es.base, es.unsetNote, p); err != nil {
				return nil, err
			}
		}
		// An image named by COPY --from or a mount is resolved for the
		// target platform, whatever the stage's own --platform.
		for _, d := range es.deps {
			if d.stage == nil && d.name != emptyImage {
				if err := add(d.site, es.dfStage, d.name, "", target); err != nil {
					return nil, err
				}
			}
		}
	}
	return uses, nil
}

func stageNames(stages []*dfStage) []string {
	var out []string
	for _, s := range stages {
		if s.name != "" {
			out = append(out, s.name)
		}
	}
	if len(out) == 0 {
		return []string{"none named"}
	}
	return out
}

func unsetNote(unmatched map[string]struct{}) string {
	if len(unmatched) == 0 {
		return ""
	}
	var names []string
	for k := range unmatched {
		names = append(names, "$"+k)
	}
	slices.Sort(names)
	return " (" + strings.Join(names, ", ") + " unset: give the ARG a default or pass it with WithBuildArgs)"
}

// undeclaredVar finds a variable that word uses plainly ($X or ${X}, not
// ${X:-default} and the like) and that no ARG declares. BuildKit
// substitutes "" for it and only warns (UndefinedArgInFrom); pinning
// refuses, because the image it would pin is almost certainly not the one
// meant.
func undeclaredVar(word string, escape byte, declared map[string]bool) (string, bool) {
	inSingle := false
	for i := 0; i < len(word); i++ {
		c := word[i]
		switch {
		case c == escape && !inSingle:
			i++
			continue
		case c == '\'':
			inSingle = !inSingle
			continue
		case c != '$' || inSingle || i+1 >= len(word):
			continue
		}
		rest := word[i+1:]
		var name string
		plain := true
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return "", false // BuildKit reports the syntax error
			}
			inner := rest[1:end]
			name = inner
			if j := strings.IndexAny(inner, ":-+?"); j >= 0 {
				name, plain = inner[:j], false
			}
			i += end + 1
		} else {
			j := 0
			for j < len(rest) && (rest[j] == '_' || unicode.IsLetter(rune(rest[j])) || unicode.IsDigit(rune(rest[j]))) {
				j++
			}
			name = rest[:j]
			i += j
		}
		if plain && name != "" && !declared[name] {
			return name, true
		}
	}
	return "", false
}

// contextName is the name the dockerfile frontend looks a named context up
// by for image ref, exactly as dockerui.Client.NamedContext computes it
// from the normalized name dockerfile2llb passes: the familiar form
// without ":latest" ("alpine", "alpine:3.20", "ghcr.io/o/app",
// "golang@sha256:...").
func contextName(named reference.Named) string {
	return strings.TrimSuffix(reference.FamiliarString(named), ":latest")
}

// contextKey is the frontend attribute that names ref's context for one
// platform: "context:<name>::<os>/<arch>[/<variant>]". The frontend tries
// this key first, then "context:<name>".
func contextKey(named reference.Named, p ocispecs.Platform) string {
	return "context:" + contextName(named) + "::" + platforms.FormatAll(platforms.Normalize(p))
}

// stageContextName is the name the frontend looks a stage's own named
// context up by: a context with this name replaces the whole stage.
func stageContextName(stage string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(stage)
	if err != nil {
		return "", false
	}
	return contextName(named), true
}

// --- rewriting ---

// edit inserts text at a byte offset of the source.
type edit struct {
	off  int
	text string
}

// rewrite inserts "@<digest>" after each image reference that digests
// names, leaving every other byte as it was.
func (df *dockerfile) rewrite(digests map[*site]string) ([]byte, error) {
	var edits []edit
	for _, s := range df.sites {
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

// instrText is an instruction's logical line, as BuildKit's parser joins
// it from physical lines, with the source offset of every byte.
type instrText struct {
	s   string
	off []int
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// text rebuilds node's logical line from the source, following
// parser.Parse: the first line loses leading white space, continuation
// lines that are comments or blank are skipped, and each line loses its
// line-continuation escape. The result must equal node.Original, which
// proves the offsets right.
func (df *dockerfile) text(n *parser.Node) (instrText, error) {
	esc := regexp.QuoteMeta(string(df.escape))
	cont := regexp.MustCompile(`([^` + esc + `])` + esc + `[ \t]*$|^` + esc + `[ \t]*$`)
	var t instrText
	for ln := n.StartLine; ln <= n.EndLine && ln-1 < len(df.lines); ln++ {
		start := df.lines[ln-1]
		end := len(df.src)
		if ln < len(df.lines) {
			end = df.lines[ln]
		}
		raw := df.src[start:end]
		b := raw
		if ln == 1 && bytes.HasPrefix(b, utf8BOM) {
			b, start = b[len(utf8BOM):], start+len(utf8BOM)
		}
		b = bytes.TrimRight(b, "\r\n")
		if ln == n.StartLine {
			trimmed := bytes.TrimLeftFunc(b, unicode.IsSpace)
			start += len(b) - len(trimmed)
			b = trimmed
		} else {
			if isComment(raw) || len(bytes.TrimLeftFunc(b, unicode.IsSpace)) == 0 {
				continue
			}
		}
		more := false
		if m := cont.FindSubmatchIndex(b); m != nil {
			more = true
			if m[2] >= 0 {
				b = b[:m[3]] // keep the byte before the escape
			} else {
				b = b[:0]
			}
		}
		for i := range b {
			t.off = append(t.off, start+i)
		}
		t.s += string(b)
		if !more {
			break
		}
	}
	if t.s != n.Original {
		return instrText{}, df.errorf(n.StartLine, "cannot locate the instruction in the source to rewrite it (rebuilt %q, parser saw %q)", t.s, n.Original)
	}
	return t, nil
}

func isComment(line []byte) bool {
	line = bytes.TrimLeftFunc(line, unicode.IsSpace)
	return len(line) > 0 && line[0] == '#'
}

// flagWord is a --flag word as BuildKit's extractBuilderFlags reads it:
// quotes and escapes removed, with the text index of every byte kept.
type flagWord struct {
	val string
	pos []int
}

// isBuildKitSpace is the white space reWhitespace splits words at.
func isBuildKitSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'
}

// splitInstruction follows parser.splitCommand on s[from:]: it returns the
// instruction keyword, its --flags and the index where its arguments
// begin.
func splitInstruction(s string, from int, escape byte) (cmd string, flags []flagWord, args int) {
	i := from
	for i < len(s) && unicode.IsSpace(rune(s[i])) {
		i++
	}
	j := i
	for j < len(s) && !isBuildKitSpace(s[j]) {
		j++
	}
	cmd = s[i:j]
	for j < len(s) && isBuildKitSpace(s[j]) {
		j++
	}
	flags, args = extractFlags(s, j, escape)
	for args < len(s) && unicode.IsSpace(rune(s[args])) {
		args++
	}
	return cmd, flags, args
}

// extractFlags is parser.extractBuilderFlags with positions.
func extractFlags(s string, from int, escape byte) ([]flagWord, int) {
	const (
		inSpaces = iota
		inWord
		inQuote
	)
	var (
		words   []flagWord
		cur     flagWord
		phase   = inSpaces
		quote   byte
		blankOK bool
	)
	for pos := from; pos <= len(s); pos++ {
		var ch byte
		if pos != len(s) {
			ch = s[pos]
		}
		if phase == inSpaces {
			if pos == len(s) {
				break
			}
			if unicode.IsSpace(rune(ch)) {
				continue
			}
			if ch != '-' || pos+1 == len(s) || s[pos+1] != '-' {
				return words, pos
			}
			phase = inWord
		}
		if pos == len(s) {
			if cur.val != "--" && (blankOK || len(cur.val) > 0) {
				words = append(words, cur)
			}
			break
		}
		if phase == inWord {
			if unicode.IsSpace(rune(ch)) {
				phase = inSpaces
				if cur.val == "--" {
					return words, pos
				}
				if blankOK || len(cur.val) > 0 {
					words = append(words, cur)
				}
				cur, blankOK = flagWord{}, false
				continue
			}
			if ch == '\'' || ch == '"' {
				quote, blankOK, phase = ch, true, inQuote
				continue
			}
			if ch == escape {
				if pos+1 == len(s) {
					continue
				}
				pos++
				ch = s[pos]
			}
			cur.val += string(ch)
			cur.pos = append(cur.pos, pos)
			continue
		}
		// inQuote
		if ch == quote {
			phase = inWord
			continue
		}
		if ch == escape {
			if pos+1 == len(s) {
				phase = inWord
				continue
			}
			pos++
			ch = s[pos]
		}
		cur.val += string(ch)
		cur.pos = append(cur.pos, pos)
	}
	return words, len(s)
}

// refEnd is the source offset just after the reference site s names: where
// "@sha256:..." goes.
func (df *dockerfile) refEnd(s *site) (int, error) {
	t, err := df.text(s.node)
	if err != nil {
		return 0, err
	}
	cmd, flags, args := splitInstruction(t.s, 0, df.escape)
	if s.onbuild {
		if !strings.EqualFold(cmd, "onbuild") {
			return 0, df.errorf(s.line(), "expected ONBUILD, found %s", cmd)
		}
		cmd, flags, args = splitInstruction(t.s, args, df.escape)
	}
	fail := func(what string) (int, error) {
		return 0, df.errorf(s.line(), "cannot find %s %q in %q to rewrite it", what, s.raw, t.s)
	}
	// at maps "just after text byte i" to a source offset.
	at := func(i int) int { return t.off[i] + 1 }
	switch s.kind {
	case siteFrom:
		end := args
		for end < len(t.s) && !isBuildKitSpace(t.s[end]) {
			end++
		}
		if end == args || t.s[args:end] != s.raw {
			return fail("FROM")
		}
		return at(end - 1), nil
	case siteCopyFrom:
		for _, f := range flags {
			if v, ok := strings.CutPrefix(f.val, "--from="); ok && v == s.raw {
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
			end, ok := csvFromEnd(spec, s.raw)
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

// csvFromEnd finds the from=<want> field of a --mount value, which BuildKit
// reads as one CSV record, and returns the index just after the value
// (inside the closing quote of a quoted field).
func csvFromEnd(spec, want string) (int, bool) {
	i := 0
	for i <= len(spec) {
		var field string
		var end, next int
		if i < len(spec) && spec[i] == '"' {
			var b strings.Builder
			j := i + 1
			for j < len(spec) {
				if spec[j] == '"' {
					if j+1 < len(spec) && spec[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(spec[j])
				j++
			}
			field, end = b.String(), j
			next = strings.IndexByte(spec[j:], ',')
			if next < 0 {
				next = len(spec)
			} else {
				next += j
			}
		} else {
			next = strings.IndexByte(spec[i:], ',')
			if next < 0 {
				next = len(spec)
			} else {
				next += i
			}
			field, end = spec[i:next], next
		}
		if k, v, ok := strings.Cut(field, "="); ok && strings.EqualFold(k, "from") && v == want {
			return end, true
		}
		i = next + 1
	}
	return 0, false
}
