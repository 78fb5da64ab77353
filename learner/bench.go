package learner

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/sample"
)

// TorchBenchScript is the learner's SFT and PPO steps in PyTorch eager (learner/bench_torch.py),
// run by 'spa bench learner' beside the Go measurement. It imports model.TorchBenchScript as
// bench_torch.
//
//go:embed bench_torch.py
var TorchBenchScript string

// benchSequences makes B random sequences of T tokens whose tokens from index first on are trained.
func benchSequences(rng *rand.Rand, B, T, first, vocab int) []Sequence {
	seqs := make([]Sequence, B)
	for b := range seqs {
		s := Sequence{IDs: make([]int, T), Train: make([]bool, T)}
		for i := range T {
			s.IDs[i] = rng.IntN(vocab)
			s.Train[i] = i >= first
		}
		seqs[b] = s
	}
	return seqs
}

// timeSteps runs step once to warm up, then steps times, and reports tokens per second; tokens
// count whole sequences (prompt and response).
func timeSteps(what string, B, T, steps int, step func() error) (model.BenchResult, error) {
	if err := step(); err != nil {
		return model.BenchResult{}, err
	}
	start := time.Now()
	for range steps {
		if err := step(); err != nil {
			return model.BenchResult{}, err
		}
	}
	el := time.Since(start).Seconds()
	n := B * T * steps
	return model.BenchResult{What: what, Batch: B, Tokens: n, Seconds: el, TokensPerSec: float64(n) / el}, nil
}

// MeasureSFT times SFT steps on B random sequences of T tokens whose second half is trained, as
// bench_torch.py's sft does. It must run on a locked OS thread.
func MeasureSFT(cfg model.Config, B, T, steps int) (model.BenchResult, error) {
	m, err := model.New(cfg, model.Options{Seed: 1})
	if err != nil {
		return model.BenchResult{}, err
	}
	defer m.Close()
	opt := NewAdamW(m.TrainableVarStore(), 0.9, 0.95, 1e-8, 0.01)
	defer opt.Close()
	seqs := benchSequences(rand.New(rand.NewPCG(1, 1)), B, T, 1+(T-1)/2, cfg.VocabSize)
	return timeSteps("sft", B, T, steps, func() error {
		_, _, _, _, err := sftStep(m, opt, seqs, 0, 1e-4, 1)
		return err
	})
}

// benchTrajectories are B single-turn trajectories of P prompt and R response tokens with random
// behaviour logprobs and rewards, in groups of 4.
func benchTrajectories(rng *rand.Rand, B, P, R, vocab int) []*bus.Trajectory {
	out := make([]*bus.Trajectory, B)
	for b := range out {
		prompt, resp, lps := make([]int, P), make([]int, R), make([]float64, R)
		for i := range prompt {
			prompt[i] = rng.IntN(vocab)
		}
		for i := range resp {
			resp[i], lps[i] = rng.IntN(vocab), -8*rng.Float64()
		}
		out[b] = benchTrajectory("bench", 0, b/4, b, prompt, resp, lps, rng.Float64())
	}
	return out
}

// benchTrajectory is one single-turn episode in the trajectory format.
func benchTrajectory(run string, version int64, group, i int, prompt, resp []int, lps []float64, reward float64) *bus.Trajectory {
	turn := bus.Turn{Messages: []bus.Message{}, Actions: []string{}, Valid: []bool{}, FormatOK: true, Done: true, Reward: reward}
	for _, id := range prompt {
		turn.PromptIDs = append(turn.PromptIDs, int32(id))
	}
	for j, id := range resp {
		turn.ResponseIDs = append(turn.ResponseIDs, int32(id))
		turn.Logprobs = append(turn.Logprobs, float32(lps[j]))
		turn.LossMask = append(turn.LossMask, 1)
	}
	return &bus.Trajectory{
		Schema: bus.TrajectorySchema, ID: fmt.Sprintf("%s-v%d-g%d-%d", run, version, group, i), Run: run, Env: "bench",
		Group: fmt.Sprintf("g%d", group), PolicyVersion: version, Model: fmt.Sprintf("spa-v%d", version),
		Turns: []bus.Turn{turn}, Reward: reward, Success: reward == 1,
	}
}

// benchPPOOptions are SPA.md's PPO settings with one mini-batch in one forward pass.
func benchPPOOptions() PPOOptions {
	return PPOOptions{ActorLR: 1e-6, CriticLR: 1e-5, ClipLow: 0.2, ClipHigh: 0.28, DualClip: 3, EntropyCoef: 0.001,
		Gamma: 1, Lambda: 1, ValueClip: 0.5, KeepGroupRatio: 1, MiniBatches: 1, Epochs: 1, Beta1: 0.9, Beta2: 0.95,
		WeightDecay: 0.01, GradClip: 1, Advantage: "gae"}
}

// MeasurePPO times PPO updates (critic scoring, GAE, whitening, one actor and one critic update)
// on B trajectories of P prompt and R response tokens, as bench_torch.py's ppo does. It must run
// on a locked OS thread.
func MeasurePPO(cfg model.Config, B, P, R, steps int) (model.BenchResult, error) {
	actor, err := model.New(cfg, model.Options{Seed: 1})
	if err != nil {
		return model.BenchResult{}, err
	}
	defer actor.Close()
	critic, err := model.NewCritic(actor, 2)
	if err != nil {
		return model.BenchResult{}, err
	}
	defer critic.Close()
	p, err := NewPPO(actor, critic, nil, benchPPOOptions())
	if err != nil {
		return model.BenchResult{}, err
	}
	defer p.Close()
	trajs := benchTrajectories(rand.New(rand.NewPCG(2, 2)), B, P, R, cfg.VocabSize)
	step := 0
	return timeSteps("ppo", B, P+R, steps, func() error {
		_, err := p.Update(trajs, step)
		step++
		return err
	})
}

// StepSplit is the mean time per PPO step by phase, in seconds.
type StepSplit struct {
	Steps     int     `json:"steps"`
	Batch     int     `json:"batch"`
	GenerateS float64 `json:"generate_s"`
	ScoreS    float64 `json:"score_s"`
	UpdateS   float64 `json:"update_s"`
	SaveS     float64 `json:"save_s"`
	SyncS     float64 `json:"sync_s"`
}

// engineSource generates each batch with an in-process engine: B sequences of R tokens after
// random prompts of P tokens, all submitted at once so the engine batches them.
type engineSource struct {
	e       *inference.Engine
	rng     *rand.Rand
	P, R    int
	vocab   int
	batches int
}

func (s *engineSource) Skip([]uint64)                     {}
func (s *engineSource) Done(context.Context, Batch) error { return nil }

func (s *engineSource) Next(ctx context.Context, n int, version int64) (Batch, error) {
	type result struct {
		ids []int
		lps []float64
		err error
	}
	results := make([]result, n)
	prompts := make([][]int, n)
	for i := range prompts {
		prompts[i] = make([]int, s.P)
		for j := range prompts[i] {
			prompts[i][j] = s.rng.IntN(s.vocab)
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, err := s.e.Submit(ctx, inference.Request{Prompt: prompts[i], MaxTokens: s.R, Sampling: sample.Params{Temperature: 1, TopP: 1}, Seed: uint64(s.batches*n + i)})
			if err != nil {
				results[i].err = err
				return
			}
			for ev := range ch {
				if ev.Err != nil {
					results[i].err = ev.Err
				}
				if ev.Token != nil {
					results[i].ids = append(results[i].ids, ev.Token.ID)
					results[i].lps = append(results[i].lps, ev.Token.Logprob)
				}
			}
		}()
	}
	wg.Wait()
	s.batches++
	var b Batch
	for i, r := range results {
		if r.err != nil {
			return Batch{}, r.err
		}
		b.Trajs = append(b.Trajs, benchTrajectory("bench", version, i/4, s.batches*n+i, prompts[i], r.ids, r.lps, s.rng.Float64()))
	}
	return b, nil
}

// MeasurePPOLoop runs steps PPO steps of the production loop with an in-process engine: generate
// B responses of R tokens, score, update, save a checkpoint, sync the engine. It returns the mean
// time per phase. It must run on a locked OS thread.
func MeasurePPOLoop(ctx context.Context, cfg model.Config, B, P, R, steps int) (StepSplit, error) {
	dir, err := os.MkdirTemp("", "spa-bench-learner-")
	if err != nil {
		return StepSplit{}, err
	}
	defer os.RemoveAll(dir)
	actor, err := model.New(cfg, model.Options{Seed: 1})
	if err != nil {
		return StepSplit{}, err
	}
	defer actor.Close()
	v0 := dir + "/v0"
	if err := model.Save(v0, actor, model.SaveOptions{}); err != nil {
		return StepSplit{}, err
	}
	critic, err := model.NewCritic(actor, 2)
	if err != nil {
		return StepSplit{}, err
	}
	defer critic.Close()
	e := inference.New(inference.Options{MaxModelLen: P + R + 8, KVCacheMB: 256, MaxBatch: B, MaxVersions: 2})
	defer e.Close()
	if err := e.LoadVersion(ctx, "spa-v0", 0, v0); err != nil {
		return StepSplit{}, err
	}
	p, err := NewPPO(actor, critic, nil, benchPPOOptions())
	if err != nil {
		return StepSplit{}, err
	}
	defer p.Close()
	split := StepSplit{Steps: steps, Batch: B}
	src := &engineSource{e: e, rng: rand.New(rand.NewPCG(3, 3)), P: P, R: R, vocab: cfg.VocabSize}
	_, err = p.Run(ctx, src, RunOptions{
		Steps: steps, BatchSize: B, Checkpoints: &Checkpointer{Dir: dir + "/ckpt", Keep: 1},
		Fleet: &Fleet{Servers: []Syncer{Embedded(e)}},
		AfterStep: func(_ context.Context, r StepReport) error {
			k := float64(steps)
			split.GenerateS += r.GenerateS / k
			split.ScoreS += r.ScoreS / k
			split.UpdateS += r.UpdateS / k
			split.SaveS += r.SaveS / k
			split.SyncS += r.SyncS / k
			return nil
		},
	})
	return split, err
}
