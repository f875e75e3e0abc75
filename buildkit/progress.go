package buildkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/moby/buildkit/client"
	gatewaypb "github.com/moby/buildkit/frontend/gateway/pb"
	solvererrdefs "github.com/moby/buildkit/solver/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// recorder collects the solve status: every vertex, and each vertex's
// last output.
type recorder struct {
	mu       sync.Mutex
	order    []digest.Digest
	steps    map[digest.Digest]*Step
	logs     map[digest.Digest]*bytes.Buffer
	warnings []string
}

// maxStepLog bounds the output kept per step for StepError.
const maxStepLog = 4 << 10

func newRecorder() *recorder {
	return &recorder{steps: map[digest.Digest]*Step{}, logs: map[digest.Digest]*bytes.Buffer{}}
}

func (r *recorder) add(s *client.SolveStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range s.Vertexes {
		st, ok := r.steps[v.Digest]
		if !ok {
			st = &Step{Digest: v.Digest}
			r.steps[v.Digest] = st
			r.order = append(r.order, v.Digest)
		}
		st.Name = v.Name
		st.Cached = st.Cached || v.Cached
		if v.Error != "" {
			st.Error = v.Error
		}
		if v.Started != nil {
			st.Started = v.Started
		}
		if v.Completed != nil {
			st.Completed = v.Completed
		}
	}
	for _, l := range s.Logs {
		b, ok := r.logs[l.Vertex]
		if !ok {
			b = &bytes.Buffer{}
			r.logs[l.Vertex] = b
		}
		b.Write(l.Data)
		if over := b.Len() - maxStepLog; over > 0 {
			b.Next(over)
		}
	}
	for _, w := range s.Warnings {
		r.warnings = append(r.warnings, string(w.Short))
	}
}

func (r *recorder) result() *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{Warnings: slices.Clone(r.warnings)}
	for _, d := range r.order {
		st := *r.steps[d]
		res.Steps = append(res.Steps, st)
		if st.Cached {
			res.Cached++
		}
	}
	res.Total = len(res.Steps)
	return res
}

// stepError names the failing step in err: the vertex the daemon's typed
// error points at or, without one, the step that reported an error.
func (r *recorder) stepError(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var vtx digest.Digest
	var ve *solvererrdefs.VertexError
	if errors.As(err, &ve) && ve.Vertex != nil {
		vtx = digest.Digest(ve.Digest)
	}
	if _, ok := r.steps[vtx]; !ok {
		vtx = ""
		for _, d := range r.order {
			st := r.steps[d]
			if st.Error == "" || strings.Contains(st.Error, context.Canceled.Error()) {
				continue
			}
			vtx = d
			break
		}
	}
	var src string
	if srcs := solvererrdefs.Sources(err); len(srcs) > 0 {
		s := srcs[len(srcs)-1]
		if s.Info != nil && len(s.Ranges) > 0 && s.Ranges[0].Start != nil {
			src = fmt.Sprintf("%s:%d", s.Info.Filename, s.Ranges[0].Start.Line)
		}
	}
	if vtx == "" {
		if src != "" {
			return fmt.Errorf("buildkit: %s: %w", src, err)
		}
		return fmt.Errorf("buildkit: %w", err)
	}
	se := &StepError{Step: r.steps[vtx].Name, Vertex: vtx, Source: src, ExitCode: -1, Err: err}
	if b := r.logs[vtx]; b != nil {
		se.Log = slices.Clone(b.Bytes())
	}
	var exit *gatewaypb.ExitError
	if errors.As(err, &exit) {
		se.ExitCode = int(exit.ExitCode)
	}
	return se
}
