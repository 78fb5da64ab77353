package learner

import (
	"context"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/internal/testdeadline"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/torchrt"
)

// TestLearnerLogprobsMatchTheServers plays multi-turn Sokoban episodes against the inference
// server over HTTP in token mode, lays them out as the learner does, and recomputes each trained
// token's logprob: it must equal the logprob the server sampled it with, at every turn, at the
// sampling temperature. A misaligned layout or a temperature applied differently would make PPO
// optimise other tokens than were sampled, without any test of rewards noticing.
func TestLearnerLogprobsMatchTheServers(t *testing.T) {
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	ex := torchrt.NewExecutor()
	defer ex.Close()
	dir := filepath.Join(t.TempDir(), "v0")
	sizedCheckpoint(t, ex, dir, 3, 600, 2048)
	srv, err := inference.Open(ctx, dir, inference.Options{MaxModelLen: 2048, KVCacheMB: 64, MaxVersions: 2}, api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()
	client, err := rollout.NewClient(rollout.ClientOptions{BaseURL: "http://" + ln.Addr().String() + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	tokens := loadTokens(t, dir)
	for _, temp := range []float64{1, 0.7} {
		var seqs []Sequence
		turns := 0
		for seed := range int64(3) {
			env, err := envs.New("sokoban", "")
			if err != nil {
				t.Fatal(err)
			}
			tr, err := rollout.Play(ctx, env, client, tokens, rollout.EpisodeOptions{
				PromptOptions: rollout.PromptOptions{Mode: rollout.Base, MaxActionsPerTurn: 5}, MaxTurns: 3, MaxTokens: 12,
				Temperature: temp, TopP: 1, Seed: seed, ID: "lp", Run: "lp"})
			if err != nil {
				t.Fatal(err)
			}
			turns += len(tr.Turns)
			s, err := FromTrajectory(tr)
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, s)
		}
		if turns <= len(seqs) {
			t.Fatalf("episodes of one turn (%d turns) test no alignment across turns", turns)
		}
		var worst float64
		err := ex.Do(ctx, func() error {
			m, err := model.Load(dir, model.Options{})
			if err != nil {
				return err
			}
			defer m.Close()
			p := &PPO{o: PPOOptions{Temperature: temp, MicroBatch: 2}}
			lps, err := p.perToken(m, seqs, p.logprobs)
			if err != nil {
				return err
			}
			for i, s := range seqs {
				if len(lps[i]) != len(s.OldLogp) {
					t.Fatalf("sequence %d: %d logprobs for %d trained tokens", i, len(lps[i]), len(s.OldLogp))
				}
				for j := range s.OldLogp {
					worst = max(worst, math.Abs(lps[i][j]-s.OldLogp[j]))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("temperature %.1f: %d turns, largest |learner - server| logprob gap %.2g", temp, turns, worst)
		if worst > 2e-3 {
			t.Errorf("temperature %.1f: the learner's logprobs differ from the server's by up to %.3g", temp, worst)
		}
	}
}

// TestLossAggregation checks the two ways of averaging the policy loss by hand: at ratio 1 the
// loss is −mean(advantage), over tokens (token-mean) or over trajectories (seq-mean-token-mean).
// A short trajectory with advantage +1 (2 tokens) and a long one with −1 (6 tokens) give
// −(2 − 6)/8 = 0.5 over tokens, and −(1 − 1)/2 = 0 over trajectories.
func TestLossAggregation(t *testing.T) {
	ex := torchrt.NewExecutor()
	defer ex.Close()
	cfg, _ := model.Preset("tiny", 64)
	cfg.NumHiddenLayers = 1
	for _, tc := range []struct {
		agg  LossAgg
		want float64
	}{{"token-mean", 0.5}, {"seq-mean-token-mean", 0}} {
		err := ex.Do(context.Background(), func() error {
			m, err := model.New(cfg, model.Options{Seed: 1})
			if err != nil {
				return err
			}
			defer m.Close()
			seq := func(n int) Sequence {
				s := Sequence{IDs: make([]int, n+2), Train: make([]bool, n+2)}
				for i := range s.IDs {
					s.IDs[i] = 3 + i
					s.Train[i] = i >= 2
				}
				return s
			}
			seqs := []Sequence{seq(2), seq(6)}
			p := &PPO{Actor: m, ActorOpt: NewAdamW(m.TrainableVarStore(), 0.9, 0.95, 1e-8, 0), o: PPOOptions{Temperature: 1, MicroBatch: 1, LossAgg: tc.agg, ClipLow: 0.2, ClipHigh: 0.28}}
			// Behaviour logprobs equal to the model's own make every ratio 1.
			lps, err := p.perToken(m, seqs, p.logprobs)
			if err != nil {
				return err
			}
			for i := range seqs {
				seqs[i].OldLogp = lps[i]
			}
			adv := [][]float64{{1, 1}, {-1, -1, -1, -1, -1, -1}}
			var sums stepSums
			if err := p.updateActor(seqs, []int{0, 1}, adv, nil, &sums); err != nil {
				return err
			}
			if math.Abs(sums.pg-tc.want) > 1e-5 {
				t.Errorf("%s: policy loss %.6f, want %.2f", tc.agg, sums.pg, tc.want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
