package harness

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/internal/progress"
	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/weightsync"
	"github.com/spa-rl/spa/worldmodel"
)

// Method is one of the methods the paper compares (docs/method.md's table): how its PPO prompts
// show states, and whether a world model is fine-tuned into the policy before PPO.
type Method struct {
	Name string
	// Render is how PPO and evaluation show states: vanilla PPO sees raw grids, the others
	// coordinates too.
	Render envs.RenderMode
	// WorldModelSFT puts self-play, ground-truth replacement and world-model SFT before PPO.
	WorldModelSFT bool
}

// Methods are the methods spa runs, in the paper's order.
var Methods = []Method{
	{Name: "spa", Render: envs.Coords, WorldModelSFT: true},
	{Name: "vanilla", Render: envs.Raw},
	{Name: "state-estimation", Render: envs.Coords},
}

// MethodNamed finds a method by name; config checks names, so an unknown one is a programming
// error reported as such.
func MethodNamed(name string) (Method, error) {
	for _, m := range Methods {
		if m.Name == name {
			return m, nil
		}
	}
	return Method{}, fmt.Errorf("unknown method %q", name)
}

// render is how a method shows states.
func render(method string) envs.RenderMode {
	m, _ := MethodNamed(method)
	if m.Render == "" {
		return envs.Coords
	}
	return m.Render
}

// worldModelSFT reports whether a method fine-tunes a world model before PPO.
func worldModelSFT(method string) bool {
	m, _ := MethodNamed(method)
	return m.WorldModelSFT
}

// Eval is one evaluation of a policy.
type Eval struct {
	Pass1 float64 `json:"pass_at_1"`
	PassK float64 `json:"pass_at_k"`
	// Pass1CI and PassKCI are 95% bootstrap intervals over puzzles.
	Pass1CI       Interval `json:"pass_at_1_ci95"`
	PassKCI       Interval `json:"pass_at_k_ci95"`
	PassKUnbiased float64  `json:"pass_at_k_unbiased"`
	// PassAt is pass@1..pass@K by the unbiased estimator.
	PassAt []float64 `json:"pass_at"`
	// Greedy is Pass@1 at temperature 0, one sample per puzzle (what the policy prefers, without
	// sampling noise).
	Greedy       float64 `json:"greedy_pass_at_1"`
	MeanReward   float64 `json:"mean_reward"`
	MeanActions  float64 `json:"mean_actions"`
	FormatErrors float64 `json:"format_error_rate"`
	// ActionInfo and ActionInfoChance are rollout.StateDependence of the sampled first actions:
	// bits of information the puzzle gives about the first move, and their chance level.
	ActionInfo       float64 `json:"first_action_info_bits"`
	ActionInfoChance float64 `json:"first_action_info_chance_bits"`
	ActionInfoP      float64 `json:"first_action_info_p"`
	StatePPL         float64 `json:"state_perplexity"`
	K                int     `json:"k"`
	Puzzles          int     `json:"puzzles"`
	// Successes counts each puzzle's successful samples (for paired comparisons).
	Successes []int `json:"successes"`
}

// method runs one method from the base checkpoint: world-model SFT (spa only), evaluation of the
// starting policy, PPO, and evaluation of the result.
func (p *pipeline) method(ctx context.Context, m, base string) error {
	dir := filepath.Join(p.o.Dir, m)
	start := base
	if worldModelSFT(m) {
		key := m + ":sft"
		if !p.st.done(key) {
			exs, err := learner.ReadSFTExamples(filepath.Join(p.o.Dir, "sft.jsonl"))
			if err != nil {
				return err
			}
			if exs, err = p.withReplay(exs); err != nil {
				return err
			}
			ckpt, _, err := p.sft(ctx, m, base, exs, filepath.Join(dir, "sft"), p.cfg.Learner.SFT.Epochs, 0)
			if err != nil {
				return err
			}
			if err := p.st.complete(key, &stageResult{Checkpoint: ckpt}); err != nil {
				return err
			}
		}
		start = p.st.Stages[key].Checkpoint
	}
	run := p.o.ID + "-" + m
	// A model trained from scratch is also measured as initialised, the untrained policy: once,
	// with the first method's states, and one sample per puzzle. It never answers in the format,
	// so every turn runs to max_tokens: with run.val_k samples its evaluation was 2m41s of the
	// quick preset's 16 minutes, for a Pass@k of 0. One sample (and the greedy one) says the same.
	if p.cfg.Run.Model == "" && base != p.initDir && m == p.cfg.Run.Methods[0] {
		if err := p.evaluate(ctx, m, "init", p.initDir, 1); err != nil {
			return err
		}
	}
	if err := p.evaluate(ctx, m, "base", base, p.cfg.Run.ValK); err != nil {
		return err
	}
	if start != base {
		if err := p.evaluate(ctx, m, "start", start, p.cfg.Run.ValK); err != nil {
			return err
		}
	}
	final, err := p.ppo(ctx, m, start, filepath.Join(dir, "ppo"), run)
	if err != nil {
		return err
	}
	return p.evaluate(ctx, m, "final", final, p.cfg.Run.ValK)
}

// evaluate measures Pass@1, Pass@k (k samples a puzzle), reward and state perplexity of a
// checkpoint, served as <method>-eval-<label>-v0 (once; a resumed run reuses the stored result).
func (p *pipeline) evaluate(ctx context.Context, m, label, ckpt string, k int) error {
	key := m + ":eval-" + label
	if p.st.done(key) {
		return nil
	}
	name := m + "-eval-" + label
	prefix := p.versionPrefix(name)
	if err := p.loadVersion(ctx, p.o.ID+"-"+name, prefix, 0, ckpt); err != nil {
		return err
	}
	e, err := p.evalModel(ctx, m, bus.VersionName(prefix, 0), label, k)
	if err != nil {
		return err
	}
	if e.StatePPL, err = p.statePPL(ctx, m, ckpt); err != nil {
		return err
	}
	p.logf("%s %s: Pass@1 %.1f%% [%.1f, %.1f], Pass@%d %.1f%%, greedy Pass@1 %.1f%%, reward %.3f, %.2f actions per episode, format errors %.1f%%, state perplexity %.2f",
		m, label, 100*e.Pass1, 100*e.Pass1CI.Low, 100*e.Pass1CI.High, e.K, 100*e.PassK, 100*e.Greedy, e.MeanReward, e.MeanActions, 100*e.FormatErrors, e.StatePPL)
	p.record(map[string]any{"stage": "eval", "method": m, "label": label, "eval": e})
	return p.st.complete(key, &stageResult{Eval: &e})
}

// evalModel plays the validation puzzles with a served model in the base prompt, k samples each
// at the rollout temperature and once greedily; an empty label draws no progress line
// (validation inside PPO, whose line is already on screen).
func (p *pipeline) evalModel(ctx context.Context, m, modelName, label string, k int) (Eval, error) {
	llms, err := p.clients(false)
	if err != nil {
		return Eval{}, err
	}
	rt, err := router(llms)
	if err != nil {
		return Eval{}, err
	}
	eo := p.episodeOptions(rollout.Base, render(m))
	eo.Model = modelName
	if label != "" {
		label = m + " eval " + label
	}
	puzzles := p.cfg.Run.ValPuzzles
	bar := progress.New(p.o.Log, label, puzzles*(k+1))
	play := func(eo rollout.EpisodeOptions, k, done int) (rollout.EvalResult, error) {
		res, err := rollout.Evaluate(ctx, func() (envs.Env, error) { return p.newEnv(ctx) }, rt.Episode, p.tokens,
			rollout.EvalOptions{Episode: eo, Puzzles: puzzles, FirstSeed: p.cfg.Run.ValSeed, K: k, Concurrency: p.cfg.Rollout.Workers,
				Progress: func(n, _ int) { bar.Set(done+n, "") }})
		if err == nil && res.Failed > 0 {
			err = fmt.Errorf("evaluation of %s: %d episodes failed", modelName, res.Failed)
		}
		return res, err
	}
	res, err := play(eo, k, 0)
	if err != nil {
		bar.Done()
		return Eval{}, err
	}
	greedy := eo
	greedy.Temperature, greedy.TopP, greedy.TopK = 0, 1, 0
	g, err := play(greedy, 1, puzzles*k)
	bar.Done()
	if err != nil {
		return Eval{}, err
	}
	return newEval(res, g.Pass1, uint64(p.cfg.Run.Seed)), nil
}

// newEval summarises an evaluation with its intervals; greedy is the greedy Pass@1.
func newEval(res rollout.EvalResult, greedy float64, seed uint64) Eval {
	pass1, passK := perPuzzle(res.Successes, res.K)
	return Eval{Pass1: res.Pass1, PassK: res.PassK, Pass1CI: bootstrapMean(pass1, seed), PassKCI: bootstrapMean(passK, seed),
		PassKUnbiased: res.PassKUnbiased, PassAt: res.PassAt, Greedy: greedy, MeanReward: res.MeanReward, MeanActions: res.MeanActions,
		FormatErrors: res.FormatErrors, ActionInfo: res.ActionInfo, ActionInfoChance: res.ActionInfoChance, ActionInfoP: res.ActionInfoP, K: res.K, Puzzles: res.Puzzles, Successes: res.Successes}
}

// statePPL is the perplexity of true states in world-model conversations on the validation
// puzzles (explorer play with ground truth), rendered as the method renders them.
func (p *pipeline) statePPL(ctx context.Context, m, ckpt string) (float64, error) {
	r := render(m)
	exs, ok := p.pplData[r]
	if !ok {
		ex := NewExplorer(p.spec, rollout.WorldModel, p.cfg.Rollout.MaxActionsPerTurn, 99)
		eo := p.episodeOptions(rollout.WorldModel, r)
		for i := range min(p.cfg.Run.ValPuzzles, 32) {
			env, err := p.newEnv(ctx)
			if err != nil {
				return 0, err
			}
			seed := p.cfg.Run.ValSeed + i
			eo.Seed = int64(seed)
			eo.ID, eo.Run = fmt.Sprintf("ppl-%d", seed), "ppl"
			tr, err := rollout.Play(ctx, env, ex, nil, eo)
			_ = envs.Close(env)
			if err != nil {
				return 0, err
			}
			exs = append(exs, worldmodel.GroundTruth(tr, rollout.SystemPrompt, true))
		}
		if p.pplData == nil {
			p.pplData = map[envs.RenderMode][]learner.SFTExample{}
		}
		p.pplData[r] = exs
	}
	var ppl float64
	err := p.ex.Do(ctx, func() error {
		mdl, err := model.Load(ckpt, model.Options{})
		if err != nil {
			return err
		}
		defer mdl.Close()
		ppl, err = learner.StatePerplexity(mdl, p.tokens, exs, 0, p.cfg.Learner.MicroBatch)
		return err
	})
	return ppl, err
}

// ppo trains method m from start: each step, rollout workers play one batch with the current
// version over HTTP (environments over the bus), the learner consumes it from JetStream, updates,
// checkpoints and syncs the server, which moves the policy KV the workers follow. It validates
// every learner.ppo.validate_every steps and returns the final checkpoint.
func (p *pipeline) ppo(ctx context.Context, m, start, out, run string) (string, error) {
	key := m + ":ppo"
	if p.st.done(key) {
		return p.st.Stages[key].Checkpoint, nil
	}
	steps := p.cfg.Learner.PPO.Steps
	prefix := p.versionPrefix(m)
	// The server needs the version the learner resumes from (or the start as version 0).
	from, version := start, int64(0)
	if ckpt, st, err := learner.Latest(out); err == nil {
		from, version = ckpt, st.Version
	} else if !learner.IsNotExist(err) {
		return "", err
	}
	if err := p.loadVersion(ctx, run, prefix, version, from); err != nil {
		return "", err
	}
	cons, err := bus.NewConsumer(ctx, p.b, run, bus.ConsumerOptions{AckWait: p.cfg.Learner.AckWait})
	if err != nil {
		return "", err
	}
	// The watch lives in the rollouts' context: a learner that stops early (an error, a bad
	// option) stops them, instead of leaving them waiting for a version that never comes.
	genCtx, stopGen := context.WithCancel(ctx)
	defer stopGen()
	watch, err := p.pols.Watch(genCtx, run)
	if err != nil {
		return "", err
	}
	genErr := make(chan error, 1)
	go func() { genErr <- p.generate(genCtx, m, run, watch, steps) }()

	began := time.Now()
	every := p.cfg.Learner.PPO.ValidateEvery
	st, err := RunPPO(ctx, PPOStage{
		Name: m + " ppo", Method: m,
		New: func() (*learner.PPO, func(), error) {
			return NewPPO(start, p.cfg.Learner, p.cfg.Rollout, uint64(p.cfg.Run.Seed))
		},
		Source: &learner.BusSource{C: cons},
		Run: learner.RunOptions{
			Steps: steps, BatchSize: p.cfg.Rollout.Groups * p.cfg.Rollout.GroupSize, MaxOffPolicySteps: p.cfg.Learner.MaxOffPolicySteps,
			Checkpoints: &learner.Checkpointer{Dir: out, TokenizerDir: start, DType: p.cfg.Learner.SaveDType, Keep: p.cfg.Learner.KeepCheckpoints},
			Fleet:       &weightsync.Fleet{Servers: p.servers, Policies: p.pols, Run: run, Patience: p.cfg.Learner.SyncPatience, Logf: p.logf},
			ModelName:   func(v int64) string { return bus.VersionName(prefix, v) },
			Seed:        uint64(p.cfg.Run.Seed), Resume: true,
		},
		// Validation every learner.ppo.validate_every steps; the last step's is the final
		// evaluation, which follows.
		AfterStep: func(ctx context.Context, r learner.StepReport) (string, error) {
			if every <= 0 || r.Step%every != 0 || r.Step >= steps {
				return "", nil
			}
			e, err := p.evalModel(ctx, m, bus.VersionName(prefix, r.Version), "", p.cfg.Run.ValK)
			if err != nil {
				return "", err
			}
			p.record(map[string]any{"stage": "validate", "method": m, "step": r.Step, "eval": e})
			mt := r.Metrics
			return fmt.Sprintf("reward %.2f success %.0f%% | validation Pass@1 %.1f%% Pass@%d %.1f%% greedy %.1f%%", mt.Reward, 100*mt.Success, 100*e.Pass1, e.K, 100*e.PassK, 100*e.Greedy), nil
		},
		StageIO: p.stageIO(),
	})
	var final string
	if err == nil {
		final, _, err = learner.Latest(out)
		p.logf("%s ppo: %d steps in %s; trained on %d trajectories (%d filtered, %d stale)", m, st.Step, time.Since(began).Round(time.Second), st.Totals.Trained, st.Totals.Filtered, st.Totals.Stale)
	}
	stopGen()
	if gerr := <-genErr; gerr != nil && !errors.Is(gerr, context.Canceled) && err == nil {
		err = gerr
	}
	if err != nil {
		return "", err
	}
	return final, p.st.complete(key, &stageResult{Checkpoint: final})
}

// generate plays one batch per policy version the KV announces, until the learner's last.
func (p *pipeline) generate(ctx context.Context, m, run string, watch <-chan bus.Policy, steps int) error {
	llms, err := p.clients(false)
	if err != nil {
		return err
	}
	for pol := range watch {
		if pol.Version >= int64(steps) {
			return nil
		}
		eo := p.episodeOptions(rollout.Base, render(m))
		eo.Model = pol.Model
		groups := p.cfg.Rollout.Groups
		if _, err := p.play(ctx, run, "", llms, p.tokens, eo, groups, int(pol.Version)*groups); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("rollouts of %s: %w", pol.Model, err)
		}
	}
	return ctx.Err()
}

// withReplay mixes run.sft_replay of the warm-up conversations evenly into the world-model SFT
// data (evenly, so that the validation tail holds both kinds).
func (p *pipeline) withReplay(exs []learner.SFTExample) ([]learner.SFTExample, error) {
	share := p.cfg.Run.SFTReplay
	path := filepath.Join(p.o.Dir, "warmup-sft.jsonl")
	if share == 0 || p.cfg.Run.Model != "" {
		return exs, nil
	}
	warm, err := learner.ReadSFTExamples(path)
	if err != nil {
		return nil, fmt.Errorf("sft replay (run.sft_replay): %w", err)
	}
	n := int(share * float64(len(warm)))
	out := make([]learner.SFTExample, 0, len(exs)+n)
	for i, j := 0, 0; i < len(exs) || j < n; {
		// Take from whichever list is behind its share of the merged order.
		if j >= n || (i < len(exs) && i*n <= j*len(exs)) {
			out = append(out, exs[i])
			i++
		} else {
			out = append(out, warm[j*len(warm)/n])
			j++
		}
	}
	p.logf("spa sft: %d world-model conversations and %d replayed warm-up ones", len(exs), n)
	return out, nil
}
