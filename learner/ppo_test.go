package learner

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/internal/testdeadline"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/domain"
	"github.com/spa-rl/spa/model/sample"
	"github.com/spa-rl/spa/torchrt"
	"github.com/spa-rl/spa/weightsync"
)

// tinyCheckpoint writes a servable tiny checkpoint (domain tokenizer, random weights) to dir.
func tinyCheckpoint(t *testing.T, ex *torchrt.Executor, dir string, seed uint64) model.Config {
	return sizedCheckpoint(t, ex, dir, seed, 300, 512)
}

// sizedCheckpoint is tinyCheckpoint with a vocabulary and context of the given sizes.
func sizedCheckpoint(t *testing.T, ex *torchrt.Executor, dir string, seed uint64, vocab, maxPos int) model.Config {
	t.Helper()
	var cfg model.Config
	if err := ex.Do(context.Background(), func() (err error) {
		cfg, _, err = model.Init(dir, model.InitOptions{Tokenizer: domain.Options{VocabSize: vocab, Seeds: 2}, Seed: seed,
			Adjust: func(c *model.Config) { c.NumHiddenLayers, c.MaxPositionEmbeddings = 2, maxPos }})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testBus opens an embedded bus with the trajectory stream, closed when the test ends.
func testBus(t *testing.T, ctx context.Context) *bus.Bus {
	t.Helper()
	b, err := bus.Open(ctx, bus.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if _, err := bus.EnsureTrajStream(ctx, b.JS, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return b
}

// lowTokenReward is the toy task: the share of sampled tokens in the lower half of the vocabulary.
// A random policy scores about 0.5; the best scores 1.
func lowTokenReward(ids []int, vocab int) float64 {
	n := 0
	for _, id := range ids {
		if id < vocab/2 {
			n++
		}
	}
	return float64(n) / float64(len(ids))
}

// TestPPORaisesRewardThroughBusAndServer runs the production loop on a toy task: an embedded
// server samples with the current version, trajectories travel through JetStream, the learner
// updates actor and critic, checkpoints, syncs the server and moves the policy KV, and the
// sampler follows the KV. The reward has to rise clearly.
func TestPPORaisesRewardThroughBusAndServer(t *testing.T) {
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	ex := torchrt.NewExecutor()
	defer ex.Close()
	dir0 := filepath.Join(t.TempDir(), "v0")
	cfg := tinyCheckpoint(t, ex, dir0, 1)
	srv, err := inference.Open(ctx, dir0, inference.Options{MaxModelLen: 64, KVCacheMB: 32, MaxVersions: 2}, api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	b := testBus(t, ctx)
	pols, err := bus.OpenPolicies(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	const run = "ppo"
	if err := pols.Set(ctx, run, bus.Policy{Version: 0, Model: "spa-v0", WeightDir: dir0}); err != nil {
		t.Fatal(err)
	}
	pub, err := bus.NewPublisher(b.Conn, bus.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := bus.NewConsumer(ctx, b, run, bus.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}

	const groups, perGroup, steps, respLen = 4, 8, 16, 6
	var mu sync.Mutex
	sampled := map[int64]float64{} // version -> mean reward of its batch
	genCtx, stopGen := context.WithCancel(ctx)
	defer stopGen()
	watch, err := pols.Watch(genCtx, run)
	if err != nil {
		t.Fatal(err)
	}
	genErr := make(chan error, 1)
	go func() {
		genErr <- func() error {
			for pol := range watch {
				if pol.Version == steps {
					return nil // the learner is done
				}
				total := 0.0
				for g := range groups {
					prompt := []int{10 + g, 20 + g, 30 + g}
					for i := range perGroup {
						ch, err := srv.Engine().Submit(genCtx, gen.Request{Model: pol.Model, Prompt: prompt, MaxTokens: respLen,
							Sampling: sample.Params{Temperature: 1, TopP: 1}, Seed: uint64(pol.Version*1000 + int64(g*perGroup+i))})
						if err != nil {
							return err
						}
						var ids []int
						var lps []float64
						for ev := range ch {
							if ev.Err != nil {
								return ev.Err
							}
							if ev.Token != nil {
								ids = append(ids, ev.Token.ID)
								lps = append(lps, ev.Token.Logprob)
							}
						}
						r := lowTokenReward(ids, cfg.VocabSize)
						total += r
						if err := pub.Publish(genCtx, benchTrajectory(run, pol.Version, g, i, prompt, ids, lps, r)); err != nil {
							return err
						}
					}
				}
				mu.Lock()
				sampled[pol.Version] = total / groups / perGroup
				mu.Unlock()
			}
			return nil
		}()
	}()

	var reports []StepReport
	err = ex.Do(ctx, func() error {
		actor, err := model.Load(dir0, model.Options{})
		if err != nil {
			return err
		}
		defer actor.Close()
		critic, err := model.NewCritic(actor, 7)
		if err != nil {
			return err
		}
		defer critic.Close()
		p, err := NewPPO(actor, critic, nil, PPOOptions{
			ActorLR: 2e-3, CriticLR: 2e-3, ClipLow: 0.2, ClipHigh: 0.28, DualClip: 3, Gamma: 1, Lambda: 1, ValueClip: 0.5,
			KeepGroupRatio: 1, MiniBatches: 2, Epochs: 2, Beta1: 0.9, Beta2: 0.95, GradClip: 1, Advantage: "gae", MicroBatch: 16,
		})
		if err != nil {
			return err
		}
		defer p.Close()
		_, err = p.Run(ctx, &BusSource{C: cons}, RunOptions{
			Steps: steps, BatchSize: groups * perGroup, MaxOffPolicySteps: 1,
			Checkpoints: &Checkpointer{Dir: filepath.Join(t.TempDir(), "ckpt"), TokenizerDir: dir0, Keep: 1},
			Fleet:       &weightsync.Fleet{Servers: []weightsync.Syncer{inference.Embedded(srv.Engine())}, Policies: pols, Run: run},
			AfterStep: func(_ context.Context, r StepReport) error {
				reports = append(reports, r)
				return nil
			},
		})
		return err
	})
	stopGen()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-genErr; err != nil && genCtx.Err() == nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	first := (sampled[0] + sampled[1]) / 2
	last := (sampled[steps-2] + sampled[steps-1]) / 2
	t.Logf("mean reward by version: first two %.3f, last two %.3f", first, last)
	for _, r := range reports {
		m := r.Metrics
		t.Logf("step %2d v%d reward %.3f pg %.4f vf %.4f ent %.3f kl %.4f clip %.3f ev %.2f norm %.2f",
			r.Step, r.Version, m.Reward, m.PolicyLoss, m.ValueLoss, m.Entropy, m.ApproxKL, m.ClipFrac, m.ExplainedVar, m.GradNorm)
		if r.Stale != 0 {
			t.Errorf("step %d dropped %d stale trajectories; the sampler follows the policy KV", r.Step, r.Stale)
		}
		if math.IsNaN(m.PolicyLoss) || math.IsNaN(m.ValueLoss) {
			t.Errorf("step %d: NaN loss", r.Step)
		}
	}
	if last < first+0.15 {
		t.Errorf("reward went from %.3f to %.3f; PPO should raise it clearly", first, last)
	}
	if n, _ := cons.Pending(ctx); n != 0 {
		t.Errorf("%d trajectories left unconsumed", n)
	}
	if got := reports[len(reports)-1].Totals.Trained; got != steps*groups*perGroup {
		t.Errorf("trained on %d trajectories, want %d", got, steps*groups*perGroup)
	}
	if name, _ := srv.Engine().Resolve("spa"); name != fmt.Sprintf("spa-v%d", steps) {
		t.Errorf("server's latest is %s after %d steps", name, steps)
	}
	entries, _ := os.ReadDir(filepath.Dir(reports[0].Checkpoint))
	if len(entries) != 3 { // two checkpoints (Keep 1 plus the newest) and LATEST
		t.Errorf("checkpoint dir holds %d entries, want 3", len(entries))
	}
}
