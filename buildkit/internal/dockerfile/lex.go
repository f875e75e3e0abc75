package dockerfile

import (
	"bytes"
	"regexp"
	"strings"
	"unicode"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

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
func (df *File) text(n *parser.Node) (instrText, error) {
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
