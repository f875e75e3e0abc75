package dockerfile

import (
	"slices"
	"strings"
	"unicode"

	"github.com/containerd/platforms"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

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
