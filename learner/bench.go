package learner

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/sugarme/gotch"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/sample"
	"github.com/spa-rl/spa/weightsync"
)

// TorchBenchScript is the learner's SFT and PPO steps in PyTorch eager (learner/bench_torch.py),
// run by 'spa bench learner' beside the Go measurement. It imports model.TorchBenchScript as
// bench_torch.
//
//go:embed bench_torch.py
var TorchBenchScript string

// BenchCase is one shape of learner work that 'spa bench learner' times in spa and in its PyTorch
// twin (bench_torch.py reads the same JSON).
type BenchCase struct {
	// Name labels the case in the table.
	Name string `json:"name"`
	// What is "sft" or "ppo".
	What string `json:"what"`
	// Batch sequences of Len tokens each; the tokens at [start, end) of every span are trained.
	Batch int      `json:"batch"`
	Len   int      `json:"len"`
	Spans [][2]int `json:"spans"`
	// Micro is how many sequences one forward pass holds (0: the whole batch), as
	// learner.micro_batch sets it.
	Micro int `json:"micro"`
	Steps int `json:"steps"`
}

// turnSpans lays out turns of a multi-turn conversation of prompt then response tokens, the first
// prompt first, and returns the responses' spans and the total length.
func turnSpans(firstPrompt, prompt, response, turns int) ([][2]int, int) {
	var spans [][2]int
	at := 0
	for k := range turns {
		if k == 0 {
			at += firstPrompt
		} else {
			at += prompt
		}
		spans = append(spans, [2]int{at, at + response})
		at += response
	}
	return spans, at
}

// BenchCases are the shapes 'spa bench learner' times, steps steps each: the small single-turn
// cases (8 × 256 SFT, 16 × (192 + 64) PPO) and the quick preset's real work. The preset's
// world-model SFT trains batches of 16 three-turn conversations of about 1k tokens, a world-model
// answer of ~120 tokens per turn; its PPO update trains 32 kept episodes of three turns (a system
// prompt and board of ~320 tokens, then ~100 per later board, answers of ~120), in forward passes
// of learner.micro_batch 8.
func BenchCases(steps int) []BenchCase {
	sftSpans, sftLen := turnSpans(400, 200, 120, 3)
	ppoSpans, ppoLen := turnSpans(320, 100, 120, 3)
	return []BenchCase{
		{Name: "sft batch 8 x 256", What: "sft", Batch: 8, Len: 256, Spans: [][2]int{{128, 256}}, Steps: steps},
		{Name: "ppo update 16 x (192+64)", What: "ppo", Batch: 16, Len: 256, Spans: [][2]int{{192, 256}}, Steps: steps},
		{Name: fmt.Sprintf("world-model sft 16 x %d, 3 turns", sftLen), What: "sft", Batch: 16, Len: sftLen, Spans: sftSpans, Micro: 8, Steps: max(1, steps/2)},
		{Name: fmt.Sprintf("multi-turn ppo 32 x %d, 3 turns", ppoLen), What: "ppo", Batch: 32, Len: ppoLen, Spans: ppoSpans, Micro: 8, Steps: max(1, steps/2)},
	}
}

// MeasureCase times c in spa's learner with cfg on device. It must run on a locked OS thread.
func MeasureCase(cfg model.Config, device gotch.Device, c BenchCase) (model.BenchResult, error) {
	if c.Len < 2 || c.Batch < 1 || len(c.Spans) == 0 {
		return model.BenchResult{}, fmt.Errorf("bench case %q: %d sequences of %d tokens with %d spans", c.Name, c.Batch, c.Len, len(c.Spans))
	}
	for _, sp := range c.Spans {
		if sp[0] < 1 || sp[1] > c.Len || sp[0] >= sp[1] {
			return model.BenchResult{}, fmt.Errorf("bench case %q: span %v outside 1..%d", c.Name, sp, c.Len)
		}
	}
	switch c.What {
	case "sft":
		return measureSFT(cfg, device, c)
	case "ppo":
		return measurePPO(cfg, device, c)
	}
	return model.BenchResult{}, fmt.Errorf("bench case %q: unknown kind %q (want sft or ppo)", c.Name, c.What)
}

// benchIDs makes c.Batch rows of c.Len random tokens.
func benchIDs(rng *rand.Rand, c BenchCase, vocab int) [][]int {
	rows := make([][]int, c.Batch)
	for b := range rows {
		rows[b] = make([]int, c.Len)
		for i := range rows[b] {
			rows[b][i] = rng.IntN(vocab)
		}
	}
	return rows
}

// measureSFT times SFT steps on c's sequences, as bench_torch.py's sft does.
func measureSFT(cfg model.Config, device gotch.Device, c BenchCase) (model.BenchResult, error) {
	m, err := model.New(cfg, model.Options{Seed: 1, Device: device})
	if err != nil {
		return model.BenchResult{}, err
	}
	defer m.Close()
	opt := NewAdamW(m.TrainableVarStore(), 0.9, 0.95, 1e-8, 0.01)
	defer opt.Close()
	seqs := make([]Sequence, c.Batch)
	for b, ids := range benchIDs(rand.New(rand.NewPCG(1, 1)), c, cfg.VocabSize) {
		seqs[b] = Sequence{IDs: ids, Train: make([]bool, c.Len)}
		for _, sp := range c.Spans {
			for i := sp[0]; i < sp[1]; i++ {
				seqs[b].Train[i] = true
			}
		}
	}
	return timeSteps("sft", c.Batch, c.Len, c.Steps, m.Settle, func() error {
		_, _, _, _, err := sftStep(m, opt, seqs, c.Micro, 1e-4, 1)
		return err
	})
}

// benchTrajectories are c.Batch trajectories in groups of 4 with one turn per span (the tokens
// before a span are its turn's prompt delta), random behaviour logprobs and a reward at the end.
func benchTrajectories(rng *rand.Rand, c BenchCase, vocab int) []*bus.Trajectory {
	out := make([]*bus.Trajectory, c.Batch)
	for b, ids := range benchIDs(rng, c, vocab) {
		reward := rng.Float64()
		t := &bus.Trajectory{
			Schema: bus.TrajectorySchema, ID: fmt.Sprintf("bench-v0-g%d-%d", b/4, b), Run: "bench", Env: "bench",
			Group: fmt.Sprintf("g%d", b/4), Model: "spa-v0", Reward: reward, Success: reward == 1,
		}
		at := 0
		for k, sp := range c.Spans {
			turn := bus.Turn{Messages: []bus.Message{}, Actions: []string{}, Valid: []bool{}, FormatOK: true}
			for _, id := range ids[at:sp[0]] {
				turn.PromptIDs = append(turn.PromptIDs, int32(id))
			}
			for _, id := range ids[sp[0]:sp[1]] {
				turn.ResponseIDs = append(turn.ResponseIDs, int32(id))
				turn.Logprobs = append(turn.Logprobs, float32(-8*rng.Float64()))
				turn.LossMask = append(turn.LossMask, 1)
			}
			if k == len(c.Spans)-1 {
				turn.Done, turn.Reward = true, reward
			}
			t.Turns = append(t.Turns, turn)
			at = sp[1]
		}
		out[b] = t
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
		Group: fmt.Sprintf("g%d", group), PolicyVersion: version, Model: bus.VersionName("spa", version),
		Turns: []bus.Turn{turn}, Reward: reward, Success: reward == 1,
	}
}

// benchPPOOptions are docs/method.md's PPO settings with one mini-batch in one epoch.
func benchPPOOptions(micro int) PPOOptions {
	return PPOOptions{ActorLR: 1e-6, CriticLR: 1e-5, ClipLow: 0.2, ClipHigh: 0.28, DualClip: 3, EntropyCoef: 0.001,
		Gamma: 1, Lambda: 1, ValueClip: 0.5, KeepGroupRatio: 1, MiniBatches: 1, Epochs: 1, Beta1: 0.9, Beta2: 0.95,
		WeightDecay: 0.01, GradClip: 1, Advantage: AdvantageGAE, MicroBatch: micro}
}

// measurePPO times PPO updates (critic scoring, GAE, whitening, one actor and one critic update)
// on c's trajectories, as bench_torch.py's ppo does.
func measurePPO(cfg model.Config, device gotch.Device, c BenchCase) (model.BenchResult, error) {
	actor, err := model.New(cfg, model.Options{Seed: 1, Device: device})
	if err != nil {
		return model.BenchResult{}, err
	}
	defer actor.Close()
	critic, err := model.NewCritic(actor, 2)
	if err != nil {
		return model.BenchResult{}, err
	}
	defer critic.Close()
	p, err := NewPPO(actor, critic, nil, benchPPOOptions(c.Micro))
	if err != nil {
		return model.BenchResult{}, err
	}
	defer p.Close()
	trajs := benchTrajectories(rand.New(rand.NewPCG(2, 2)), c, cfg.VocabSize)
	step := 0
	return timeSteps("ppo", c.Batch, c.Len, c.Steps, actor.Settle, func() error {
		_, err := p.Update(trajs, step)
		step++
		return err
	})
}

// timeSteps runs step once to warm up, then steps times, and reports tokens per second; tokens
// count whole sequences (prompt and response). settle waits for the device's queued work.
func timeSteps(what string, B, T, steps int, settle func(), step func() error) (model.BenchResult, error) {
	if err := step(); err != nil {
		return model.BenchResult{}, err
	}
	settle()
	start := time.Now()
	for range steps {
		if err := step(); err != nil {
			return model.BenchResult{}, err
		}
	}
	settle()
	el := time.Since(start).Seconds()
	n := B * T * steps
	return model.BenchResult{What: what, Batch: B, Tokens: n, Seconds: el, TokensPerSec: float64(n) / el}, nil
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
			ch, err := s.e.Submit(ctx, gen.Request{Prompt: prompts[i], MaxTokens: s.R, Sampling: sample.Params{Temperature: 1, TopP: 1}, Seed: uint64(s.batches*n + i)})
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
// time per phase. The learner and the engine both run on device. It must run on a locked OS
// thread.
func MeasurePPOLoop(ctx context.Context, cfg model.Config, device gotch.Device, B, P, R, steps int) (StepSplit, error) {
	dir, err := os.MkdirTemp("", "spa-bench-learner-")
	if err != nil {
		return StepSplit{}, err
	}
	defer os.RemoveAll(dir)
	actor, err := model.New(cfg, model.Options{Seed: 1, Device: device})
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
	e := inference.New(inference.Options{MaxModelLen: P + R + 8, KVCacheMB: 256, MaxBatch: B, MaxVersions: 2, Device: device})
	defer e.Close()
	if err := e.LoadVersion(ctx, "spa-v0", 0, v0); err != nil {
		return StepSplit{}, err
	}
	p, err := NewPPO(actor, critic, nil, benchPPOOptions(0))
	if err != nil {
		return StepSplit{}, err
	}
	defer p.Close()
	split := StepSplit{Steps: steps, Batch: B}
	src := &engineSource{e: e, rng: rand.New(rand.NewPCG(3, 3)), P: P, R: R, vocab: cfg.VocabSize}
	_, err = p.Run(ctx, src, RunOptions{
		Steps: steps, BatchSize: B, Checkpoints: &Checkpointer{Dir: dir + "/ckpt", Keep: 1},
		Fleet: &weightsync.Fleet{Servers: []weightsync.Syncer{inference.Embedded(e)}},
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
