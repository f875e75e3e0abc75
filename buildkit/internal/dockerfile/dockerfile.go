// Package dockerfile reads a Dockerfile the way BuildKit v0.33.1's
// dockerfile frontend (frontend/dockerfile/dockerfile2llb) does, with
// BuildKit's own parser, to find out which external images a build uses
// and for which platform (Parse, then File.Evaluate per target platform),
// and rewrites references in place (File.Rewrite). Where BuildKit's
// behaviour is surprising it is mirrored, not corrected, and the comment
// says so: pinning must name exactly the images BuildKit will ask for.
//
// The files follow the steps: parse.go records every place an image may
// be named, evaluate.go expands ARGs and follows stages for one platform,
// rewrite.go and lex.go find a reference's bytes in the source again.
package dockerfile

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Errors. They come wrapped in a *LineError naming the line where it can;
// package buildkit re-exports them.
var (
	// ErrInvalid: the Dockerfile does not parse, names an invalid image
	// reference or an unknown target stage, or uses a construct BuildKit
	// rejects.
	ErrInvalid = errors.New("invalid Dockerfile")
	// ErrUndefinedArg: a FROM uses a variable no ARG before the first FROM
	// declares, or expands to nothing. It is also ErrInvalid.
	ErrUndefinedArg = fmt.Errorf("%w: undefined ARG", ErrInvalid)
)

// emptyImage is the FROM name that means "no base image".
const emptyImage = "scratch"

// siteKind says where in an instruction an image reference is written.
type siteKind int

const (
	siteFrom      siteKind = iota // FROM <image>
	siteCopyFrom                  // COPY --from=<image>
	siteMountFrom                 // RUN --mount=...,from=<image>
)

// Site is one place in the Dockerfile where an image may be named. Whether
// it names an image, a stage or scratch is only known per platform, after
// ARG expansion.
type Site struct {
	Raw     string       // the reference as written, before ARG expansion
	node    *parser.Node // the instruction; for ONBUILD, the ONBUILD line
	kind    siteKind
	mount   int  // siteMountFrom: index among the instruction's --mount flags
	onbuild bool // the reference is in an ONBUILD trigger
}

// Line is the 1-based line of the site's instruction.
func (s *Site) Line() int { return s.node.StartLine }

// Stage is a FROM and its instructions.
type Stage struct {
	Name     string // lower case, as BuildKit's parser makes it; "" if unnamed
	From     *Site
	index    int
	baseName string  // as written, before ARG expansion
	platform string  // --platform as written
	copies   []*Site // COPY --from and RUN --mount from, in order
	onbuilds []*Site // the same, inside ONBUILD triggers
}

// Label names the stage in reports: its name or its index.
func (s *Stage) Label() string {
	if s.Name != "" {
		return s.Name
	}
	return strconv.Itoa(s.index)
}

// File is a parsed Dockerfile that keeps its source for rewriting.
type File struct {
	Name     string   // for errors: "Dockerfile"
	Stages   []*Stage // in source order
	Sites    []*Site  // every site in source order
	src      []byte
	lines    []int // byte offset of each physical line; lines[0] is line 1
	escape   byte
	metaArgs []instructions.ArgCommand
}

// LineError is an error about one line of a Dockerfile. Its message starts
// with "Dockerfile:<line>:" as BuildKit's do, so a user can find the line;
// errors.Is and errors.As reach the error it wraps.
type LineError struct {
	File string // the Dockerfile's name, as given to Parse
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

func (df *File) errorf(line int, format string, args ...any) error {
	return &LineError{File: df.Name, Line: line, Err: fmt.Errorf(format, args...)}
}

// invalid is an ErrInvalid about a line.
func (df *File) invalid(line int, format string, args ...any) error {
	return &LineError{File: df.Name, Line: line, Err: fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))}
}
