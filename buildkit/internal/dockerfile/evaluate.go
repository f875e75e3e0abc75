package dockerfile

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Target is what a Dockerfile is evaluated for: one build of it.
type Target struct {
	Platform      ocispecs.Platform // the target platform ($TARGETPLATFORM)
	BuildPlatform ocispecs.Platform // $BUILDPLATFORM
	Stage         string            // the target stage, any case; "" is the last
	BuildArgs     map[string]string // --build-arg values
}

// Use is one external image a build needs for one platform.
type Use struct {
	Site     *Site
	Stage    *Stage            // the stage that uses it
	Ref      string            // after ARG expansion
	Named    reference.Named   // Ref normalized, ":latest" added if untagged
	Platform ocispecs.Platform // normalized
}

// evalStage is a stage after ARG expansion for one target platform.
type evalStage struct {
	*Stage
	base         string             // expanded base name
	baseStage    *evalStage         // FROM <earlier stage>
	fromPlatform *ocispecs.Platform // FROM --platform, normalized
	deps         []evalDep
	unsetNote    string // variables the base name found unset, for errors
}

// evalDep is a COPY --from or RUN --mount from of a stage, its own or an
// ONBUILD trigger of its base.
type evalDep struct {
	site  *Site
	stage *evalStage // nil: an image or scratch
}

// evaluation is the state of one Evaluate: the global ARG scope and the
// stages after expansion.
type evaluation struct {
	df       *File
	t        Target
	lex      *shell.Lex
	env      *argEnv
	declared map[string]bool       // every ARG name the FROM lines may use
	stages   []*evalStage          // in source order
	byName   map[string]*evalStage // lower-case stage names
}

// Evaluate works out, as the dockerfile frontend does for one target
// platform, which stages the target needs and which images they use, in
// source order.
func (df *File) Evaluate(t Target) ([]Use, error) {
	e := &evaluation{df: df, t: t, lex: shell.NewLex(rune(df.escape)), byName: map[string]*evalStage{}}
	if err := e.globalArgs(); err != nil {
		return nil, err
	}
	if err := e.expandStages(); err != nil {
		return nil, err
	}
	target, err := e.targetStage()
	if err != nil {
		return nil, err
	}
	if err := e.linkDeps(); err != nil {
		return nil, err
	}
	return e.uses(reachable(target))
}

// globalArgs sets up the scope of the FROM lines as buildMetaArgs does:
// the built-in ARGs, then each ARG before the first FROM, set by a build
// arg or else by its default, expanded with what is defined so far. An ARG
// with neither stays unset.
func (e *evaluation) globalArgs() error {
	targetStage := e.t.Stage
	if targetStage == "" {
		targetStage = e.df.Stages[len(e.df.Stages)-1].Name
	}
	e.env = builtinArgs(e.t.BuildPlatform, e.t.Platform, targetStage, e.t.BuildArgs)
	e.declared = map[string]bool{}
	for _, k := range e.env.keys {
		e.declared[k] = true
	}
	for _, a := range e.df.metaArgs {
		for _, kv := range a.Args {
			e.declared[kv.Key] = true
			if v, ok := e.t.BuildArgs[kv.Key]; ok {
				e.env.set(kv.Key, v)
				continue
			}
			if kv.Value == nil {
				continue
			}
			r, err := e.lex.ProcessWordWithMatches(*kv.Value, e.env)
			if err != nil {
				return e.df.invalid(a.Location()[0].Start.Line, "ARG %s: %v", kv.Key, err)
			}
			e.env.set(kv.Key, r.Result)
		}
	}
	return nil
}

// expand expands word in the global scope and also returns a note naming
// the variables it found unset, for the error a bad result leads to.
func (e *evaluation) expand(line int, what, word string) (string, string, error) {
	if name, ok := undeclaredVar(word, e.df.escape, e.declared); ok {
		return "", "", e.df.errorf(line, "%w: %s %s uses $%s, which no ARG before the first FROM declares (build args apply only to declared ARGs)", ErrUndefinedArg, what, word, name)
	}
	r, err := e.lex.ProcessWordWithMatches(word, e.env)
	if err != nil {
		return "", "", e.df.invalid(line, "%s %s: %v", what, word, err)
	}
	note := unsetNote(r.Unmatched)
	if r.Result == "" {
		return "", "", e.df.errorf(line, "%w: %s %s is empty after ARG expansion%s", ErrUndefinedArg, what, word, note)
	}
	return r.Result, note, nil
}

// expandStages expands every FROM line and finds which ones name an
// earlier stage.
func (e *evaluation) expandStages() error {
	for _, st := range e.df.Stages {
		es := &evalStage{Stage: st}
		line := st.From.Line()
		base, note, err := e.expand(line, "FROM", st.baseName)
		if err != nil {
			return err
		}
		es.base, es.unsetNote = base, note
		if st.platform != "" {
			pv, note, err := e.expand(line, "FROM --platform", st.platform)
			if err != nil {
				return err
			}
			p, err := platforms.Parse(pv)
			if err != nil {
				return e.df.invalid(line, "FROM --platform=%s: %v%s", st.platform, err, note)
			}
			p = platforms.Normalize(p)
			es.fromPlatform = &p
		}
		// BuildKit looks the expanded base name up among the earlier
		// stages exactly, against lower-case stage names: "FROM Base"
		// does not find the stage "base" (it becomes an image name, and
		// an invalid one).
		es.baseStage = e.byName[base]
		e.stages = append(e.stages, es)
		if st.Name != "" {
			e.byName[st.Name] = es
		}
	}
	return nil
}

// targetStage is the stage Target.Stage names, or the last one.
func (e *evaluation) targetStage() (*evalStage, error) {
	if e.t.Stage == "" {
		return e.stages[len(e.stages)-1], nil
	}
	es := e.byName[strings.ToLower(e.t.Stage)]
	if es == nil {
		return nil, e.df.errorf(0, "%w: target stage %q is not defined (stages: %s)", ErrInvalid, e.t.Stage, strings.Join(stageNames(e.df.Stages), ", "))
	}
	return es, nil
}

// linkDeps resolves every stage's COPY --from and RUN --mount from, and
// the ONBUILD triggers of its base, to a stage or to an image.
func (e *evaluation) linkDeps() error {
	for _, es := range e.stages {
		sites := es.copies
		if es.baseStage != nil {
			sites = append(sites[:len(sites):len(sites)], es.baseStage.onbuilds...)
		}
		for _, s := range sites {
			st, err := e.findStage(s)
			if err != nil {
				return err
			}
			es.deps = append(es.deps, evalDep{site: s, stage: st})
		}
	}
	return nil
}

// findStage is the stage a COPY --from or RUN --mount from names (by name,
// any case, or by index: also later stages), or nil for an image.
func (e *evaluation) findStage(s *Site) (*evalStage, error) {
	if s.kind == siteCopyFrom {
		if strings.ContainsAny(s.Raw, "$") {
			r, _ := e.lex.ProcessWordWithMatches(s.Raw, &argEnv{vals: map[string]string{}})
			if r.Result != s.Raw {
				return nil, e.df.invalid(s.Line(), "COPY --from=%s: variable expansion is not supported for --from; define a stage with FROM using a global ARG instead", s.Raw)
			}
		}
		if idx, err := strconv.Atoi(s.Raw); err == nil {
			if idx < 0 || idx >= len(e.stages) {
				return nil, e.df.invalid(s.Line(), "COPY --from=%d: invalid stage index", idx)
			}
			return e.stages[idx], nil
		}
	}
	return e.byName[strings.ToLower(s.Raw)], nil
}

// reachable is the set of stages target needs: itself, its base and the
// stages it copies or mounts from, transitively.
func reachable(target *evalStage) map[*evalStage]bool {
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
	walk(target)
	return reach
}

// uses lists the images the reachable stages name, in source order.
func (e *evaluation) uses(reach map[*evalStage]bool) ([]Use, error) {
	var uses []Use
	for _, es := range e.stages {
		if !reach[es] {
			continue
		}
		if es.baseStage == nil && es.base != emptyImage {
			p := e.t.Platform
			if es.fromPlatform != nil {
				p = *es.fromPlatform
			}
			u, err := e.use(es.From, es.Stage, es.base, es.unsetNote, p)
			if err != nil {
				return nil, err
			}
			uses = append(uses, u)
		}
		// An image named by COPY --from or a mount is resolved for the
		// target platform, whatever the stage's own --platform.
		for _, d := range es.deps {
			if d.stage == nil && d.site.Raw != emptyImage {
				u, err := e.use(d.site, es.Stage, d.site.Raw, "", e.t.Platform)
				if err != nil {
					return nil, err
				}
				uses = append(uses, u)
			}
		}
	}
	return uses, nil
}

// use is the Use of image ref at s; note explains an invalid reference.
func (e *evaluation) use(s *Site, st *Stage, ref, note string, p ocispecs.Platform) (Use, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		hint := note
		if _, ok := e.byName[strings.ToLower(ref)]; ok && s.kind == siteFrom {
			hint += fmt.Sprintf(" (BuildKit matches FROM stage names exactly: write %q for the stage)", strings.ToLower(ref))
		}
		return Use{}, e.df.invalid(s.Line(), "invalid image reference %q: %v%s", ref, err, hint)
	}
	return Use{Site: s, Stage: st, Ref: ref, Named: reference.TagNameOnly(named), Platform: p}, nil
}

// stageNames lists the named stages, for an error about the target.
func stageNames(stages []*Stage) []string {
	var out []string
	for _, s := range stages {
		if s.Name != "" {
			out = append(out, s.Name)
		}
	}
	if len(out) == 0 {
		return []string{"none named"}
	}
	return out
}
