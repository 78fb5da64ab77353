package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/internal/testdeadline"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/rollout"
)

// cueActions are the cue task's answers, so a policy that answers at random is right one time
// in ten; cues are the indices of the two letters a cue can be.
var (
	cueActions = []string{"A", "B", "C", "D", "E", "F", "G", "H", "I", "J"}
	cues       = []int{0, 9}
)

// cueEnv is the learning-signal task: two turns, a letter (A or J) shown in both, and a reward of 1 when
// the second turn's action is that letter. The first turn's action counts for nothing, so the
// trajectory is multi-turn while the reward depends on one choice given what was observed.
type cueEnv struct {
	cue, turn int
	reset     bool
}

func init() {
	envs.Register(envs.Info{Name: "cue", Description: "say the letter you are shown (the learning-signal test)",
		Variants: []envs.Variant{{Name: "default", Description: "ten letters, two turns"}}},
		func(string) (envs.Env, error) { return &cueEnv{}, nil })
}

func (e *cueEnv) Spec() envs.Spec {
	return envs.Spec{Name: "cue", Variant: "default", Description: "say the letter you are shown",
		Instructions: "On turn 2, answer with the cue.",
		Legend:       "Cue: a letter", Actions: cueActions, MaxActions: 2,
		RenderModes: []envs.RenderMode{envs.Raw, envs.Coords}}
}

func (e *cueEnv) Reset(seed int64) error {
	e.cue, e.turn, e.reset = cues[uint64(seed)%uint64(len(cues))], 0, true
	return nil
}

func (e *cueEnv) Step(action string) (envs.Step, error) {
	switch {
	case !e.reset:
		return envs.Step{}, envs.ErrNotReset
	case e.turn >= 2:
		return envs.Step{}, envs.ErrEpisodeDone
	}
	i := slices.Index(cueActions, strings.TrimSpace(action))
	if i < 0 {
		return envs.Step{Valid: false}, nil
	}
	e.turn++
	if e.turn < 2 {
		return envs.Step{Valid: true}, nil
	}
	if i == e.cue {
		return envs.Step{Valid: true, Done: true, Success: true, Reward: 1}, nil
	}
	return envs.Step{Valid: true, Done: true}, nil
}

// Render repeats the letter, so that a from-scratch model can read it by averaging its context
// instead of growing a copying head first.
func (e *cueEnv) Render(envs.RenderMode) string {
	return "Cue:" + strings.Repeat(" "+cueActions[e.cue], 8)
}

// cueReader stands in for the prior of a pretrained model: it restates what it observed in its
// thinking, then answers with a random letter ("<think>The cue is C.</think>
// <answer>H</answer>"), or, copy of the time, with the cue. A tiny model warmed up on its play
// reads the cue into its context and answers mostly at random (6-16% success with copy 0.1);
// PPO has to learn to use what it read. The weak copying prior is what a pretrained model brings
// (it repeats what it has just read more often than chance); without it, the first steps must
// grow the copy from nothing and the runs took 16-24 steps instead of 11-15. (A from-scratch
// model warmed up on answers that ignore the state never grows the circuit that reads it within
// the test's steps, which tests the model, not PPO.)
type cueReader struct {
	mu   sync.Mutex
	rng  *rand.Rand
	copy float64
}

func (c *cueReader) Generate(_ context.Context, req rollout.GenRequest) (rollout.GenResponse, error) {
	cue, _, _ := strings.Cut(strings.TrimPrefix(rollout.StateOf(req.Messages[len(req.Messages)-1].Content), "Cue: "), " ")
	c.mu.Lock()
	a := cueActions[c.rng.IntN(len(cueActions))]
	if c.rng.Float64() < c.copy {
		a = cue
	}
	c.mu.Unlock()
	text := "<think>The cue is " + cue + ".</think><answer>" + a + "</answer>"
	return rollout.GenResponse{Text: text, Model: ExplorerModel, FinishReason: "stop"}, nil
}

// signalConfig is the learning-signal run: the cue task, the tiny model with a short format
// warm-up, groups of 8, one action per turn.
func signalConfig(t *testing.T, advantage string, extra map[string]string) config.Config {
	t.Helper()
	flags := map[string]string{
		"env.name": "cue", "run.methods": "vanilla", "run.seed": "3",
		"run.warmup_episodes": "256", "run.warmup_epochs": "4", "run.warmup_lr": "4e-3", "run.val_puzzles": "10", "run.val_k": "4",
		"rollout.groups": "8", "rollout.group_size": "8", "rollout.workers": "16", "rollout.max_turns": "2",
		"rollout.max_actions_per_turn": "1", "rollout.max_tokens": "24",
		"learner.sft.batch_size": "16", "learner.micro_batch": "32",
		"learner.ppo.advantage": advantage, "learner.ppo.actor_lr": "5e-4", "learner.ppo.critic_lr": "1e-3",
		"learner.ppo.group_filter": "success", "learner.ppo.entropy_coef": "0", "learner.ppo.epochs": "2", "learner.ppo.mini_batches": "2",
		"server.max_model_len": "512", "server.kv_cache_mb": "64",
	}
	for k, v := range extra {
		flags[k] = v
	}
	cfg, err := config.Load(config.Sources{Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// reached is the first step (1-based) at which the success of it and the step before average
// at least 80%, or 0.
func reached(success []float64) int {
	for i := 1; i < len(success); i++ {
		if (success[i-1]+success[i])/2 >= 0.8 {
			return i + 1
		}
	}
	return 0
}

// TestPPOLearnsTheCueTask is the learning-signal test: through the real stack (the embedded
// server over HTTP, environments on the bus, trajectories in JetStream, weight sync after every
// step), PPO must take a policy that reads the cue but answers mostly at random (6-16% success)
// to 80% within a fixed number of steps, with GRPO and with GAE and a critic, while the same
// run with rewards shuffled within groups must not. Since there are two cues, a policy that ignores
// them can reach at most 50%: 80% means the policy uses what it observed. It guards the RL maths
// end to end.
func TestPPOLearnsTheCueTask(t *testing.T) {
	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "signal")
	var log strings.Builder
	// Two layers instead of the tiny preset's four: copying a letter from the prompt takes no
	// more, and a step costs about half (idle Xeon, seed 3: warm-up 14 s instead of 28 s, GRPO's
	// 14 steps to 80% in 38 s instead of 83 s). The test is about the RL maths and the stack,
	// not the model's size.
	o := Options{Config: signalConfig(t, "grpo", nil), Dir: dir, ID: "signal", Log: &log,
		adjustModel: func(c *model.Config) { c.NumHiddenLayers = 2 }}
	p, err := open(ctx, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	defer p.close()
	began := time.Now()
	p.warmupPlayer = func(seed uint64) rollout.LLM { return &cueReader{rng: rand.New(rand.NewPCG(seed, 7)), copy: 0.1} }
	base, err := p.warmup(ctx, p.initDir)
	if err != nil {
		t.Fatalf("warm-up: %v\n%s", err, log.String())
	}
	t.Logf("warm-up: %s", time.Since(began).Round(time.Second))

	// A stage whose learner cannot start returns its error: the rollouts beside it once waited
	// forever for a policy version that never came.
	p.cfg = signalConfig(t, "grpo", map[string]string{"learner.ppo.critic_warmup": "1"})
	if _, err := p.ppo(ctx, "broken", base, filepath.Join(dir, "broken"), "signal-broken"); err == nil || !strings.Contains(err.Error(), "critic warm-up") {
		t.Fatalf("a PPO stage whose learner cannot start: %v, want the critic warm-up refusal", err)
	}

	const steps = 30
	// run plays one case: PPO from the warmed-up base under seed, stopping once a learning case
	// has shown it; it returns the success rate of every step.
	run := func(name, advantage string, extra map[string]string, learns bool, seed string, maxSteps int) []float64 {
		began := time.Now()
		flags := map[string]string{"learner.ppo.steps": fmt.Sprint(maxSteps), "run.seed": seed}
		for k, v := range extra {
			flags[k] = v
		}
		p.cfg = signalConfig(t, advantage, flags)
		caseCtx, stop := context.WithCancel(ctx)
		at := make(chan int, 1)
		go func() {
			defer stop()
			for caseCtx.Err() == nil {
				if ser, err := p.readSeries(); err == nil && ser[name] != nil && learns && reached(ser[name].success) > 0 {
					at <- reached(ser[name].success)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			at <- 0
		}()
		_, err := p.ppo(caseCtx, name, base, filepath.Join(dir, name), "signal-"+name)
		stop()
		stoppedAt := <-at
		if err != nil && stoppedAt == 0 {
			t.Fatalf("%s: %v\n%s", name, err, log.String())
		}
		ser, err := p.readSeries()
		if err != nil || ser[name] == nil {
			t.Fatalf("%s: no PPO steps in metrics.jsonl: %v", name, err)
		}
		s := ser[name].success
		t.Logf("%s (seed %s): success per step %.2f (%s)", name, seed, s, time.Since(began).Round(time.Second))
		if len(s) < 2 || s[0] > 0.3 {
			t.Errorf("%s: the starting policy succeeds %.2f of the time; the task does not test learning", name, s)
		}
		return s
	}
	// The negative control is the GRPO run with shuffled rewards, and gets the steps that GRPO
	// needed (at least 10): the steps that were enough with true rewards must not be enough with
	// shuffled ones.
	budget := 10
	for _, c := range []struct {
		name, advantage string
		extra           map[string]string
		learns          bool
	}{
		{"grpo", "grpo", nil, true},
		// GAE keeps every group. Filtered to groups with a success, a policy that settles on one
		// letter (50%) trains only on the groups whose cue is that letter, where every answer
		// succeeds and the critic's noise is all the advantage there is: that state is
		// absorbing (GAE stalled at 47% for 30 steps on an idle machine). The failing groups
		// are what tell it to answer J to a J.
		// One critic pass a step, where the actor makes two: the critic is a second whole model,
		// and its second pass was a quarter of each step (beside a CPU-bound process, 6.8 s a
		// step against 5.1 s); GAE still reached 80% in 14-15 steps.
		{"gae", "gae", map[string]string{"learner.ppo.critic_warmup": "2", "learner.ppo.group_filter": "none", "learner.ppo.critic_epochs": "1"}, true},
		{"shuffled", "grpo", map[string]string{"learner.ppo.shuffle_rewards": "true"}, false},
	} {
		n := steps
		if !c.learns {
			n = budget
		}
		s := run(c.name, c.advantage, c.extra, c.learns, "3", n)
		if c.learns && reached(s) == 0 {
			// Rollouts run asynchronously beside the learner, so a run's path depends on timing
			// as well as on its seed, and a run can settle on ignoring the cue (50%). Broken
			// maths fails every seed, so one more seed is allowed. (actor_lr 1e-3 reached 80% in
			// 12-15 steps on an idle machine, but beside a CPU-bound process GRPO sat at 50% for
			// 12 steps and GAE lost its answer format on every J: the larger steps break it.)
			t.Logf("%s: no 80%% within %d steps under seed 3; once more under seed 4", c.name, steps)
			s = run(c.name+"-seed4", c.advantage, c.extra, c.learns, "4", n)
		}
		switch at := reached(s); {
		case c.learns && at == 0:
			t.Errorf("%s: success never reached 80%% in %d steps, under either seed", c.name, steps)
		case c.learns && c.advantage == "grpo":
			budget = max(budget, at)
		case c.learns:
		case len(s) != n:
			t.Errorf("%s: %d step records, want %d", c.name, len(s), n)
		case at > 0:
			t.Errorf("%s: the negative control reached 80%% success at step %d, within the %d steps GRPO needed: the policy learns from something other than its rewards", c.name, at, n)
		}
	}
}
