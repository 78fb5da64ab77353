package rollout

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

// InstantLLM answers every turn at once with the same response, so a benchmark measures the
// harness (prompts, tokenization, parsing, environments, trajectories) and not a model.
type InstantLLM struct {
	resp GenResponse
}

// NewInstantLLM encodes text once with tokens (nil for chat mode).
func NewInstantLLM(text string, tokens *Tokens) *InstantLLM {
	r := GenResponse{Text: text, Model: "instant-v0", FinishReason: "stop"}
	if tokens != nil {
		r.TokenIDs = append(tokens.Tok.Encode(text), tokens.endTurn)
		r.Logprobs = make([]float32, len(r.TokenIDs))
	}
	return &InstantLLM{resp: r}
}

// Generate implements LLM.
func (l *InstantLLM) Generate(context.Context, GenRequest) (GenResponse, error) { return l.resp, nil }

// HarnessResult is rollout throughput with an instant model.
type HarnessResult struct {
	Workers     int     `json:"workers"`
	Episodes    int64   `json:"episodes"`
	Turns       int64   `json:"turns"`
	Seconds     float64 `json:"seconds"`
	TurnsPerSec float64 `json:"turns_per_sec"`
	EpisodesSec float64 `json:"episodes_per_sec"`
}

// MeasureHarness runs workers for about d with an instant model and counts turns and episodes
// (trajectories are built and validated, then dropped).
func MeasureHarness(newEnv func() (envs.Env, error), tokens *Tokens, workers int, d time.Duration) (HarnessResult, error) {
	llm := NewInstantLLM("<think><observation>P at (1, 2)</observation><prediction>P at (2, 2)</prediction></think><answer>Down || Right</answer>", tokens)
	router, err := NewRouter([]string{"instant"}, []LLM{llm})
	if err != nil {
		return HarnessResult{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var turns, episodes atomic.Int64
	start := time.Now()
	_, err = RunWorkers(ctx, WorkerOptions{
		Run: "bench", Worker: "w", Workers: workers, GroupSize: 8, NewEnv: newEnv, Router: router, Tokens: tokens,
		Episode: EpisodeOptions{PromptOptions: PromptOptions{Mode: WorldModel, Render: envs.Coords, MaxActionsPerTurn: 5}, MaxTurns: 5},
		Publish: func(_ context.Context, tr *bus.Trajectory) error {
			turns.Add(int64(len(tr.Turns)))
			episodes.Add(1)
			return nil
		},
		Drain: time.Second,
	})
	el := time.Since(start).Seconds()
	res := HarnessResult{Workers: workers, Episodes: episodes.Load(), Turns: turns.Load(), Seconds: el}
	res.TurnsPerSec, res.EpisodesSec = float64(res.Turns)/el, float64(res.Episodes)/el
	return res, err
}
