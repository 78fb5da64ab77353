package learner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nlpodyssey/safetensors"

	"github.com/spa-rl/spa/model"
)

// TrainerState is everything besides the weights that exact resume needs. Randomness in the
// learner is derived from Seed and Step (mini-batch and epoch orders), so no generator state is
// stored.
type TrainerState struct {
	Stage string `json:"stage"`
	// Step counts completed steps: optimiser steps in SFT, PPO steps in PPO.
	Step int    `json:"step"`
	Seed uint64 `json:"seed"`
	// ActorOptStep and CriticOptStep are the optimisers' update counts (bias correction).
	ActorOptStep  int64 `json:"actor_opt_step"`
	CriticOptStep int64 `json:"critic_opt_step,omitempty"`
	// Version is the policy version these weights are served as.
	Version int64 `json:"version"`
	// Consumed lists the stream positions the last step used or set aside. They are acknowledged after
	// the checkpoint is written; if the learner dies in between, a resumed learner acknowledges
	// them again instead of training on them twice.
	Consumed []uint64 `json:"consumed,omitempty"`
	// Totals count trajectories over the whole run.
	Totals   Totals    `json:"totals"`
	SavedAt  time.Time `json:"saved_at"`
	Finished bool      `json:"finished,omitempty"`
}

// Totals count what the learner did with trajectories, across resumes.
type Totals struct {
	Trained  int64 `json:"trained"`
	Stale    int64 `json:"stale"`
	Filtered int64 `json:"filtered"`
	Invalid  int64 `json:"invalid"`
}

// Checkpointer writes checkpoints under Dir: one directory per save, each a servable Hugging Face
// checkpoint (config.json, model.safetensors, the tokenizer files copied from TokenizerDir) with
// trainer_state.json, the optimiser moments, and the critic in critic/ when there is one. The
// file LATEST names the newest complete checkpoint; it is written last, so a crash mid-save
// leaves the previous one in force.
type Checkpointer struct {
	Dir string
	// TokenizerDir holds tokenizer.json and tokenizer_config.json to copy into each checkpoint.
	TokenizerDir string
	// DType of saved weights ("float32" or "bfloat16"); optimiser state is always float32.
	DType string
	// Keep is how many checkpoints to keep besides the newest; 0 keeps all.
	Keep int
}

// Saved is what Save wrote.
type Saved struct {
	Dir string
	// AdapterDir is the PEFT adapter, for LoRA runs.
	AdapterDir string
}

// Save writes a checkpoint named name (e.g. "step-000012").
func (c *Checkpointer) Save(name string, actor, critic *model.Model, actorOpt, criticOpt *AdamW, st TrainerState) (Saved, error) {
	dir := filepath.Join(c.Dir, name)
	fail := func(err error) (Saved, error) { return Saved{}, fmt.Errorf("save checkpoint %s: %w", dir, err) }
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	saved := Saved{Dir: dir}
	if err := model.Save(dir, actor, model.SaveOptions{DType: c.DType}); err != nil {
		return fail(err)
	}
	if actor.LoRA() != nil {
		saved.AdapterDir = filepath.Join(dir, "adapter")
		if err := actor.SaveAdapter(saved.AdapterDir); err != nil {
			return fail(err)
		}
	}
	if c.TokenizerDir != "" {
		if err := CopyTokenizer(c.TokenizerDir, dir); err != nil {
			return fail(err)
		}
	}
	if err := writeState(filepath.Join(dir, OptimizerFile), actorOpt.State()); err != nil {
		return fail(err)
	}
	if critic != nil {
		cdir := filepath.Join(dir, "critic")
		if err := model.Save(cdir, critic, model.SaveOptions{DType: c.DType}); err != nil {
			return fail(err)
		}
		if err := writeState(filepath.Join(cdir, OptimizerFile), criticOpt.State()); err != nil {
			return fail(err)
		}
	}
	st.SavedAt = time.Now().UTC()
	data, _ := json.MarshalIndent(st, "", "  ")
	if err := writeAtomic(filepath.Join(dir, "trainer_state.json"), append(data, '\n')); err != nil {
		return fail(err)
	}
	if err := writeAtomic(filepath.Join(c.Dir, "LATEST"), []byte(name+"\n")); err != nil {
		return fail(err)
	}
	c.prune(name)
	return saved, nil
}

// prune removes old checkpoints beyond Keep, never the newest.
func (c *Checkpointer) prune(newest string) {
	if c.Keep <= 0 {
		return
	}
	entries, err := os.ReadDir(c.Dir)
	if err != nil {
		return
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "step-") && e.Name() != newest {
			names = append(names, e.Name())
		}
	}
	for len(names) > c.Keep {
		_ = os.RemoveAll(filepath.Join(c.Dir, names[0]))
		names = names[1:]
	}
}

// Latest returns the newest complete checkpoint under dir and its trainer state, or
// os.ErrNotExist when there is none.
func Latest(dir string) (string, TrainerState, error) {
	data, err := os.ReadFile(filepath.Join(dir, "LATEST"))
	if err != nil {
		return "", TrainerState{}, err
	}
	ckpt := filepath.Join(dir, strings.TrimSpace(string(data)))
	st, err := ReadState(ckpt)
	return ckpt, st, err
}

// ReadState reads a checkpoint's trainer_state.json.
func ReadState(ckpt string) (TrainerState, error) {
	var st TrainerState
	data, err := os.ReadFile(filepath.Join(ckpt, "trainer_state.json"))
	if err != nil {
		return st, fmt.Errorf("trainer state: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("trainer state %s: %w", ckpt, err)
	}
	return st, nil
}

// OptimizerFile is where a checkpoint keeps its optimiser's moments, relative to the checkpoint
// directory. It is in a subdirectory because vLLM loads every *.safetensors at the top of a model
// directory as weights: beside model.safetensors, the moments made vLLM refuse spa's checkpoints
// ("no module or parameter named 'exp_avg/model'", docs/interop.md).
const OptimizerFile = "optimizer/state.safetensors"

// legacyOptimizerFile is where checkpoints written before the move kept the moments.
const legacyOptimizerFile = "optimizer.safetensors"

// LoadOptimizer restores an optimiser's moments from a checkpoint directory (the actor's, or
// critic/ for the critic's); checkpoints from before OptimizerFile moved still resume.
func LoadOptimizer(dir string, o *AdamW, step int64) error {
	path := filepath.Join(dir, OptimizerFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if _, lerr := os.Stat(filepath.Join(dir, legacyOptimizerFile)); lerr == nil {
			path = filepath.Join(dir, legacyOptimizerFile)
		}
	}
	state, err := readState(path)
	if err != nil {
		return err
	}
	if err := o.LoadState(state, step); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}

func writeState(path string, state map[string]model.Param) error {
	views := map[string]safetensors.TensorView{}
	for name, p := range state {
		shape := make([]uint64, len(p.Shape))
		for i, s := range p.Shape {
			shape[i] = uint64(s)
		}
		v, err := safetensors.NewTensorView(safetensors.F32, shape, model.Float32Bytes(p.Data))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		views[name] = v
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := safetensors.SerializeToWriter(views, nil, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readState(path string) (map[string]model.Param, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("optimizer state: %w", err)
	}
	st, err := safetensors.Deserialize(data)
	if err != nil {
		return nil, fmt.Errorf("optimizer state %s: %w", path, err)
	}
	out := map[string]model.Param{}
	for _, name := range st.Names() {
		v, _ := st.Tensor(name)
		if v.DType() != safetensors.F32 {
			return nil, fmt.Errorf("optimizer state %s: %s is %s, want F32", path, name, v.DType())
		}
		shape := make([]int, len(v.Shape()))
		for i, s := range v.Shape() {
			shape[i] = int(s)
		}
		out[name] = model.Param{Shape: shape, Data: model.Float32sFromBytes(v.Data())}
	}
	return out, nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// TokenizerFiles are the files that make a checkpoint directory self-contained for serving.
var TokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json"}

// CopyTokenizer copies the tokenizer files from src to dst; a missing file is an error, since a
// checkpoint without them cannot be served.
func CopyTokenizer(src, dst string) error {
	if filepath.Clean(src) == filepath.Clean(dst) {
		return nil
	}
	for _, name := range TokenizerFiles {
		if err := copyFile(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("copy tokenizer: %w", err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// IsNotExist reports whether err means there is no checkpoint yet.
func IsNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
