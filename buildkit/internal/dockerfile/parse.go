package dockerfile

import (
	"bytes"
	"errors"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Parse parses src with BuildKit's parser and instruction
// parser, recording every place an image may be named.
func Parse(src []byte, name string) (*File, error) {
	df := &File{Name: name, src: src}
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
	var cur *Stage
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
			cur = &Stage{index: len(df.Stages), Name: c.Name, baseName: c.BaseName, platform: c.Platform}
			cur.From = df.addSite(n, siteFrom, 0, false, c.BaseName)
			df.Stages = append(df.Stages, cur)
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
	if len(df.Stages) == 0 {
		return nil, df.invalid(0, "no FROM: the Dockerfile contains no stages to build")
	}
	return df, nil
}

func (df *File) addSite(n *parser.Node, kind siteKind, mount int, onbuild bool, raw string) *Site {
	s := &Site{Raw: raw, node: n, kind: kind, mount: mount, onbuild: onbuild}
	df.Sites = append(df.Sites, s)
	return s
}

// commandSites records the COPY --from and RUN --mount from references of
// one command.
func (df *File) commandSites(n *parser.Node, c instructions.Command, onbuild bool) ([]*Site, error) {
	var out []*Site
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
func (df *File) onbuildSites(n *parser.Node, ob *instructions.OnbuildCommand) ([]*Site, error) {
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
