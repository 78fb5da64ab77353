package learner

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/internal/testdeadline"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/torchrt"
	"github.com/spa-rl/spa/worldmodel"
)

func loadTokens(t *testing.T, dir string) *rollout.Tokens {
	t.Helper()
	tokens, err := rollout.LoadTokens(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// toyConversations are world-model turns of a one-row corridor: the state is the player's
// position, the action moves it right.
func toyConversations(n int) []SFTExample {
	var out []SFTExample
	for i := range n {
		pos := i % 4
		row := func(p int) string { return strings.Repeat("_", p) + "P" + strings.Repeat("_", 5-p) }
		msgs := []chat.Message{{Role: "system", Content: "You're a helpful assistant."}, {Role: "user", Content: "Turn 1:\nState:\n" + row(pos)}}
		for k := range 2 {
			p := pos + k
			msgs = append(msgs,
				chat.Message{Role: "assistant", Content: fmt.Sprintf("<think><observation>%s</observation><prediction>%s</prediction></think><answer>Right</answer>", row(p), row(p+1))},
				chat.Message{Role: "user", Content: fmt.Sprintf("Reward: -0.1\nTurn %d:\nState:\n%s", k+2, row(p+1))})
		}
		out = append(out, SFTExample{Messages: msgs, Env: "corridor", Seed: int64(i)})
	}
	return out
}

func paramsEqual(t *testing.T, what string, a, b map[string]model.Param) {
	t.Helper()
	for name, p := range a {
		q, ok := b[name]
		if !ok {
			t.Errorf("%s: %s missing", what, name)
			continue
		}
		for i := range p.Data {
			if p.Data[i] != q.Data[i] {
				t.Errorf("%s: %s[%d] = %v vs %v", what, name, i, p.Data[i], q.Data[i])
				break
			}
		}
	}
}

// TestSFTLearnsAndResumesExactly trains the world-model SFT loop on toy conversations: the
// validation loss falls, a run stopped after step k and resumed ends with the same weights as
// one that never stopped, and the state mask takes exactly the state bodies out of the loss.
func TestSFTLearnsAndResumesExactly(t *testing.T) {
	ex := torchrt.NewExecutor()
	defer ex.Close()
	dir0 := filepath.Join(t.TempDir(), "v0")
	tinyCheckpoint(t, ex, dir0, 1)
	tokens := loadTokens(t, dir0)
	data := toyConversations(24)
	seqs, dropped, err := SFTSequences(tokens, data, 512, false)
	if err != nil || dropped != 0 {
		t.Fatal(err, dropped)
	}
	train, val := seqs[:20], seqs[20:]
	opts := SFTOptions{LR: 3e-3, Beta1: 0.9, Beta2: 0.95, WeightDecay: 0.01, GradClip: 1, WarmupRatio: 0.1, Epochs: 3, BatchSize: 4, MicroBatch: 2, Seed: 5}

	runFrom := func(stopAfter int, resume bool, ck string) (SFTResult, map[string]model.Param) {
		var res SFTResult
		var params map[string]model.Param
		err := ex.Do(context.Background(), func() error {
			m, err := model.Load(dir0, model.Options{})
			if err != nil {
				return err
			}
			defer m.Close()
			o := opts
			o.StopAfter, o.Resume = stopAfter, resume
			o.Checkpoints = &Checkpointer{Dir: ck, TokenizerDir: dir0}
			o.SaveEvery = 1
			if res, err = TrainSFT(context.Background(), m, train, val, o); err != nil {
				return err
			}
			params = m.Params()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return res, params
	}
	var before float64
	if err := ex.Do(context.Background(), func() error {
		m, err := model.Load(dir0, model.Options{})
		if err != nil {
			return err
		}
		defer m.Close()
		before, err = EvalLoss(m, val, 4)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	full, want := runFrom(0, false, filepath.Join(t.TempDir(), "a"))
	t.Logf("val loss %.3f -> %.3f in %d steps (%.0f tokens/s)", before, full.ValLoss, full.Steps, full.TokensPerSec)
	if full.Steps != 15 || !(full.ValLoss < before*0.5) {
		t.Errorf("%d steps, val loss %.3f -> %.3f; want 15 steps and the loss halved", full.Steps, before, full.ValLoss)
	}
	ck := filepath.Join(t.TempDir(), "b")
	if r, _ := runFrom(7, false, ck); r.Steps != 7 {
		t.Fatalf("stopped run did %d steps", r.Steps)
	}
	resumed, got := runFrom(0, true, ck)
	if resumed.ResumedAtStep != 7 || resumed.Steps != 15 {
		t.Errorf("resumed at %d and ended at %d, want 7 and 15", resumed.ResumedAtStep, resumed.Steps)
	}
	paramsEqual(t, "sft resume", want, got)
	if _, st, err := Latest(ck); err != nil || st.Step != 15 || !st.Finished || st.Stage != "sft" {
		t.Errorf("latest checkpoint state %+v %v", st, err)
	}

	masked, _, err := SFTSequences(tokens, data[:1], 512, true)
	if err != nil {
		t.Fatal(err)
	}
	var removed []int
	for i := range masked[0].Train {
		if seqs[0].Train[i] && !masked[0].Train[i] {
			removed = append(removed, seqs[0].IDs[i])
		}
		if masked[0].Train[i] && !seqs[0].Train[i] {
			t.Fatalf("state masking trained token %d, which is not the assistant's", i)
		}
	}
	text, _ := tokens.Tok.Decode(removed, false)
	wantText := ""
	for _, m := range data[0].Messages {
		if m.Role == "assistant" {
			for _, p := range worldmodel.StateSpans(m.Content) {
				if p.State {
					wantText += p.Text
				}
			}
		}
	}
	if text != wantText {
		t.Errorf("state masking removed %q, want the state bodies %q", text, wantText)
	}
}

// toyBatch is n deterministic single-turn trajectories of version 0.
func toyBatch(run string, step, n, vocab int) []*bus.Trajectory {
	var out []*bus.Trajectory
	for i := range n {
		g := i / 4
		prompt := []int{5 + g, 6 + step, 7}
		resp := make([]int, 5)
		lps := make([]float64, 5)
		for j := range resp {
			resp[j] = (step*31 + i*7 + j*13) % vocab
			lps[j] = -math.Log(float64(vocab)) + 0.01*float64(j)
		}
		tr := benchTrajectory(run, 0, g, i, prompt, resp, lps, float64((i+step)%3)/2)
		tr.ID = fmt.Sprintf("%s-s%d-%d", run, step, i)
		tr.Group = fmt.Sprintf("s%d-g%d", step, g)
		out = append(out, tr)
	}
	return out
}

// TestPPOResumesExactly stops a PPO run after step 2 and resumes it from its checkpoint (fresh
// models, optimisers and consumer): step 3's weights equal those of a run that never stopped.
func TestPPOResumesExactly(t *testing.T) {
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	ex := torchrt.NewExecutor()
	defer ex.Close()
	dir0 := filepath.Join(t.TempDir(), "v0")
	cfg := tinyCheckpoint(t, ex, dir0, 2)
	b := testBus(t, ctx)
	pub, err := bus.NewPublisher(b.Conn, bus.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []string{"whole", "parts"} {
		for step := range 3 {
			for _, tr := range toyBatch(run, step, 8, cfg.VocabSize) {
				if err := pub.Publish(ctx, tr); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	opts := PPOOptions{ActorLR: 1e-3, CriticLR: 1e-3, ClipLow: 0.2, ClipHigh: 0.28, DualClip: 3, EntropyCoef: 0.001, Gamma: 1, Lambda: 1,
		ValueClip: 0.5, KeepGroupRatio: 0.5, MiniBatches: 2, Epochs: 2, Beta1: 0.9, Beta2: 0.95, WeightDecay: 0.01, GradClip: 1, Advantage: "gae", MicroBatch: 3}
	train := func(run string, steps int, resume bool, ck string) (actorP, criticP map[string]model.Param, st TrainerState) {
		err := ex.Do(ctx, func() error {
			actor, err := model.Load(dir0, model.Options{})
			if err != nil {
				return err
			}
			defer actor.Close()
			critic, err := model.NewCritic(actor, 3)
			if err != nil {
				return err
			}
			defer critic.Close()
			p, err := NewPPO(actor, critic, nil, opts)
			if err != nil {
				return err
			}
			defer p.Close()
			cons, err := bus.NewConsumer(ctx, b, run, bus.ConsumerOptions{})
			if err != nil {
				return err
			}
			// Trajectories are all version 0; a wide window keeps them in.
			st, err = p.Run(ctx, &BusSource{C: cons}, RunOptions{Steps: steps, BatchSize: 8, MaxOffPolicySteps: 100, Seed: 11, Resume: resume,
				Checkpoints: &Checkpointer{Dir: ck, TokenizerDir: dir0}})
			actorP, criticP = actor.Params(), critic.Params()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	wantA, wantC, whole := train("whole", 3, false, filepath.Join(t.TempDir(), "whole"))
	ck := filepath.Join(t.TempDir(), "parts")
	train("parts", 2, false, ck)
	// Put the checkpoint's optimiser moments where checkpoints kept them before they moved to
	// OptimizerFile: a resume from the old layout must stay exact.
	latest, err := os.ReadFile(filepath.Join(ck, "LATEST"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "critic"} {
		dir := filepath.Join(ck, strings.TrimSpace(string(latest)), d)
		if err := os.Rename(filepath.Join(dir, OptimizerFile), filepath.Join(dir, legacyOptimizerFile)); err != nil {
			t.Fatal(err)
		}
	}
	gotA, gotC, parts := train("parts", 3, true, ck)
	paramsEqual(t, "actor", wantA, gotA)
	paramsEqual(t, "critic", wantC, gotC)
	if whole.Totals != parts.Totals || parts.Step != 3 || parts.Version != 3 {
		t.Errorf("totals %+v vs %+v, step %d, version %d", whole.Totals, parts.Totals, parts.Step, parts.Version)
	}
	if whole.Totals.Trained != 12 || whole.Totals.Filtered != 12 {
		t.Errorf("totals %+v: keeping half the groups of 3 × 8 trajectories trains 12", whole.Totals)
	}
}

// TestBusSourceSkipsWhatACheckpointConsumed covers a learner that died after writing a
// checkpoint but before acknowledging its batch: the resumed source acknowledges the
// redelivered trajectories instead of training on them again, and drops stale ones.
func TestBusSourceSkipsWhatACheckpointConsumed(t *testing.T) {
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	b := testBus(t, ctx)
	pub, _ := bus.NewPublisher(b.Conn, bus.PublisherOptions{})
	batch := toyBatch("skip", 0, 6, 50)
	for i, tr := range batch {
		tr.PolicyVersion = 1
		if i == 2 {
			tr.PolicyVersion = 0 // stale at version 1
		}
		if err := pub.Publish(ctx, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	copts := bus.ConsumerOptions{AckWait: 500 * time.Millisecond}
	c1, _ := bus.NewConsumer(ctx, b, "skip", copts)
	first, err := (&BusSource{C: c1}).Next(ctx, 2, 1)
	if err != nil || len(first.Trajs) != 2 {
		t.Fatal(err, len(first.Trajs))
	}
	// The learner "dies" here: first is never acknowledged.
	c2, _ := bus.NewConsumer(ctx, b, "skip", copts)
	src := &BusSource{C: c2, Wait: 200 * time.Millisecond}
	src.Skip(first.Seqs)
	rest, err := src.Next(ctx, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tr := range append(first.Trajs, rest.Trajs...) {
		if seen[tr.ID] {
			t.Errorf("%s handed out twice", tr.ID)
		}
		seen[tr.ID] = true
	}
	if rest.Stale != 1 || len(rest.Trajs) != 3 {
		t.Errorf("stale %d, got %d trajectories", rest.Stale, len(rest.Trajs))
	}
	if err := src.Done(ctx, rest); err != nil {
		t.Fatal(err)
	}
	// The skipped two come back after AckWait and are acknowledged, not handed out.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if extra, err := src.Next(short, 1, 1); err == nil {
		t.Errorf("got %s; the skipped ones were handed out again", extra.Trajs[0].ID)
	}
}

// TestTurnGAEByHand checks the bi-level estimate on two turns of two tokens with γ = 0.5, λ = 1.
func TestTurnGAEByHand(t *testing.T) {
	turn := []int{0, 0, 1, 1}
	rewards := []float64{1, 2}
	values := []float64{0.5, 0.25, 1, 0}
	adv, ret := TurnGAE(turn, rewards, values, 0.5, 1)
	// Backwards: t3 (end of turn 1, last): δ = 2 − 0 = 2, A = 2.
	// t2 (inside turn 1): δ = 0 + V3 − V2 = −1, A = −1 + 2 = 1.
	// t1 (end of turn 0): δ = 1 + 0.5·V2 − V1 = 1.25, A = 1.25 + 0.5·1 = 1.75.
	// t0: δ = V1 − V0 = −0.25, A = −0.25 + 1.75 = 1.5.
	want := []float64{1.5, 1.75, 1, 2}
	for i := range want {
		if math.Abs(adv[i]-want[i]) > 1e-12 || math.Abs(ret[i]-(want[i]+values[i])) > 1e-12 {
			t.Errorf("token %d: adv %v ret %v, want %v %v", i, adv[i], ret[i], want[i], want[i]+values[i])
		}
	}
}

// TestGRPOAndTurnGAEUpdate runs one update of each critic-free and bi-level variant and checks
// the wiring: GRPO refuses a critic, and both produce finite losses.
func TestGRPOAndTurnGAEUpdate(t *testing.T) {
	ex := torchrt.NewExecutor()
	defer ex.Close()
	dir0 := filepath.Join(t.TempDir(), "v0")
	cfg := tinyCheckpoint(t, ex, dir0, 4)
	batch := toyBatch("var", 0, 8, cfg.VocabSize)
	err := ex.Do(context.Background(), func() error {
		actor, err := model.Load(dir0, model.Options{})
		if err != nil {
			return err
		}
		defer actor.Close()
		critic, err := model.NewCritic(actor, 1)
		if err != nil {
			return err
		}
		defer critic.Close()
		base := PPOOptions{ActorLR: 1e-3, CriticLR: 1e-3, ClipLow: 0.2, ClipHigh: 0.28, Gamma: 1, Lambda: 1, ValueClip: 0.5, KeepGroupRatio: 1, GradClip: 1, KLCoef: 0.1}
		if _, err := NewPPO(actor, critic, actor, with(base, "grpo")); err == nil {
			return fmt.Errorf("grpo accepted a critic")
		}
		if _, err := NewPPO(actor, nil, actor, with(base, "gae")); err == nil {
			return fmt.Errorf("gae accepted no critic")
		}
		for _, c := range []struct {
			adv    Advantage
			critic *model.Model
		}{{"grpo", nil}, {"turn-gae", critic}} {
			p, err := NewPPO(actor, c.critic, actor, with(base, c.adv))
			if err != nil {
				return err
			}
			m, err := p.Update(batch, 0)
			p.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", c.adv, err)
			}
			if math.IsNaN(m.PolicyLoss) || math.IsNaN(m.RefKL) || m.Kept != 8 || m.GradNorm == 0 {
				return fmt.Errorf("%s: metrics %+v", c.adv, m)
			}
		}
		// Critic warm-up: the first step trains the critic alone, the second both.
		warm := with(base, "gae")
		warm.CriticWarmup = 1
		p, err := NewPPO(actor, critic, actor, warm)
		if err != nil {
			return err
		}
		defer p.Close()
		for step, frozen := range []bool{true, false} {
			actorSteps, criticSteps := p.ActorOpt.Step, p.CriticOpt.Step
			m, err := p.Update(batch, step)
			if err != nil {
				return err
			}
			if m.ActorFrozen != frozen || (p.ActorOpt.Step == actorSteps) != frozen || p.CriticOpt.Step == criticSteps {
				return fmt.Errorf("critic warm-up step %d: frozen %v, actor steps %d → %d, critic steps %d → %d", step, m.ActorFrozen, actorSteps, p.ActorOpt.Step, criticSteps, p.CriticOpt.Step)
			}
		}
		// Critic epochs: two mini-batches a pass, so each pass is two optimiser steps; the actor
		// makes its own passes over the same mini-batches.
		for _, c := range []struct {
			epochs, criticEpochs    int
			actorSteps, criticSteps int64
		}{
			{2, 1, 4, 2}, {1, 3, 2, 6}, {2, 0, 4, 4},
		} {
			o := with(base, "gae")
			o.MiniBatches, o.Epochs, o.CriticEpochs = 2, c.epochs, c.criticEpochs
			p, err := NewPPO(actor, critic, actor, o)
			if err != nil {
				return err
			}
			if _, err := p.Update(batch, 0); err != nil {
				p.Close()
				return err
			}
			actorSteps, criticSteps := p.ActorOpt.Step, p.CriticOpt.Step
			p.Close()
			if actorSteps != c.actorSteps || criticSteps != c.criticSteps {
				return fmt.Errorf("epochs %d, critic epochs %d: %d actor and %d critic steps, want %d and %d", c.epochs, c.criticEpochs, actorSteps, criticSteps, c.actorSteps, c.criticSteps)
			}
		}
		if _, err := NewPPO(actor, nil, actor, PPOOptions{Advantage: "grpo", CriticWarmup: 1, KLCoef: 0.1}); err == nil {
			return fmt.Errorf("a critic warm-up without a critic was accepted")
		}
		// With no success in the batch, filtering by success keeps nothing and the step trains
		// nothing, without an error; with one, that episode's group is kept.
		failed := make([]*bus.Trajectory, len(batch))
		for i, tr := range batch {
			c := *tr
			c.Success = i == 5
			failed[i] = &c
		}
		g, err := NewPPO(actor, nil, actor, PPOOptions{Advantage: "grpo", GroupFilter: FilterSuccess, KLCoef: 0.1, ActorLR: 1e-3})
		if err != nil {
			return err
		}
		defer g.Close()
		before := g.ActorOpt.Step
		if m, err := g.Update(failed, 0); err != nil || m.Kept != 4 || m.NoSignal || g.ActorOpt.Step != before+1 {
			return fmt.Errorf("success filter with one success: %+v, %v", m, err)
		}
		failed[5].Success = false
		if m, err := g.Update(failed, 1); err != nil || !m.NoSignal || m.Kept != 0 || g.ActorOpt.Step != before+1 {
			return fmt.Errorf("success filter on an all-fail batch: %+v, %v", m, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func with(o PPOOptions, adv Advantage) PPOOptions {
	o.Advantage = adv
	return o
}

// TestTrainableAgreesWithFromTrajectory checks the source's cheap filter against the layout it
// stands in for.
func TestTrainableAgreesWithFromTrajectory(t *testing.T) {
	tok := benchTrajectory("t", 0, 0, 0, []int{1, 2}, []int{3, 4}, []float64{-1, -1}, 1)
	chat := benchTrajectory("t", 0, 0, 1, []int{1, 2}, []int{3, 4}, []float64{-1, -1}, 1)
	chat.Turns = append(chat.Turns, bus.Turn{Messages: []bus.Message{{Role: "user", Content: "x"}}})
	unmasked := benchTrajectory("t", 0, 0, 2, []int{1, 2}, []int{3, 4}, []float64{-1, -1}, 1)
	unmasked.Turns[0].LossMask = bus.Mask{0, 0}
	first := benchTrajectory("t", 0, 0, 3, nil, []int{3}, []float64{-1}, 1)
	for _, c := range []struct {
		name string
		tr   *bus.Trajectory
		want bool
	}{{"token mode", tok, true}, {"a chat-mode turn", chat, false}, {"nothing trained", unmasked, false}, {"only the first token", first, false}} {
		_, err := FromTrajectory(c.tr)
		if got := trainable(c.tr); got != c.want || got != (err == nil) {
			t.Errorf("%s: trainable %v, FromTrajectory error %v, want %v", c.name, got, err, c.want)
		}
	}
}
