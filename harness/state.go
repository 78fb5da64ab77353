package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// state is runs/<id>/state.json: the stages completed so far, with what they produced. A resumed
// run skips completed stages; the stage in progress continues from its own checkpoints.
type state struct {
	path   string
	Stages map[string]*stageResult `json:"stages"`
}

type stageResult struct {
	Checkpoint string         `json:"checkpoint,omitempty"`
	Eval       *Eval          `json:"eval,omitempty"`
	Counts     map[string]int `json:"counts,omitempty"`
	Finished   time.Time      `json:"finished"`
}

// loadState reads the state of a run to resume, or starts one. Starting over a directory that
// already has a state is refused: it would mix two runs.
func loadState(dir string, resume bool) (*state, error) {
	s := &state{path: filepath.Join(dir, "state.json"), Stages: map[string]*stageResult{}}
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
	r.Finished = time.Now().UTC()
	s.Stages[stage] = r
	data, _ := json.MarshalIndent(s, "", "  ")
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}
