package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// state is runs/<id>/state.json: the stages completed so far, with what they produced. A resumed
// run skips completed stages; the stage in progress continues from its own checkpoints.
type state struct {
	path   string
	Stages map[string]*stageResult `json:"stages"`
	// since is when the stage in progress began in this process: stages run one after another,
	// so that is when the last one finished, or when the process loaded the state.
	since time.Time
	// finished, when set, hears of each stage completed and its wall time.
	finished func(stage string, took time.Duration)
}

type stageResult struct {
	Checkpoint string         `json:"checkpoint,omitempty"`
	Eval       *Eval          `json:"eval,omitempty"`
	Counts     map[string]int `json:"counts,omitempty"`
	Finished   time.Time      `json:"finished"`
	// Seconds is the stage's wall time in the process that finished it (a stage resumed after an
	// interruption counts from the resume).
	Seconds float64 `json:"seconds,omitempty"`
}

// loadState reads the state of a run to resume, or starts one. Starting over a directory that
// already has a state is refused: it would mix two runs.
func loadState(dir string, resume bool) (*state, error) {
	s := &state{path: filepath.Join(dir, "state.json"), Stages: map[string]*stageResult{}, since: time.Now()}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if resume {
			return nil, fmt.Errorf("resume %s: no state.json; is it a run directory?", dir)
		}
		return s, nil
	case err != nil:
		return nil, err
	case !resume:
		return nil, fmt.Errorf("%s already holds a run; continue it with --resume %s, or pick another run id", dir, dir)
	}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("resume %s: %w", s.path, err)
	}
	return s, nil
}

func (s *state) done(stage string) bool { _, ok := s.Stages[stage]; return ok }

// complete records a finished stage durably.
func (s *state) complete(stage string, r *stageResult) error {
	if r == nil {
		r = &stageResult{}
	}
	now := time.Now()
	took := now.Sub(s.since)
	s.since = now
	r.Finished, r.Seconds = now.UTC(), took.Seconds()
	s.Stages[stage] = r
	data, _ := json.MarshalIndent(s, "", "  ")
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return err
	}
	if s.finished != nil {
		s.finished(stage, took)
	}
	return nil
}

// timings lists the completed stages in the order they finished, with their wall times.
func (s *state) timings() []StageTime {
	names := slices.SortedFunc(maps.Keys(s.Stages), func(a, b string) int { return s.Stages[a].Finished.Compare(s.Stages[b].Finished) })
	out := make([]StageTime, len(names))
	for i, name := range names {
		out[i] = StageTime{Stage: name, Seconds: s.Stages[name].Seconds}
	}
	return out
}

// StageTime is a stage's wall time ("spa:ppo", "vanilla:eval-final", ...).
type StageTime struct {
	Stage   string  `json:"stage"`
	Seconds float64 `json:"seconds"`
}

// methodResults gathers each method's evaluations from the completed stages.
func (s *state) methodResults(methods []string) []MethodResult {
	out := make([]MethodResult, 0, len(methods))
	eval := func(stage string) *Eval {
		if r := s.Stages[stage]; r != nil {
			return r.Eval
		}
		return nil
	}
	for _, m := range methods {
		out = append(out, MethodResult{Method: m, Init: eval(m + ":eval-init"), Base: eval(m + ":eval-base"),
			Start: eval(m + ":eval-start"), Final: eval(m + ":eval-final")})
	}
	return out
}
