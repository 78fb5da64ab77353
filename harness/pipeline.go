package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/envs"
	_ "github.com/spa-rl/spa/envs/builtin" // the built-in environments the run hosts on the bus
	"github.com/spa-rl/spa/envs/busenv"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	metricslog "github.com/spa-rl/spa/internal/metrics"
	"github.com/spa-rl/spa/internal/progress"
	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/stack"
	"github.com/spa-rl/spa/torchrt"
	"github.com/spa-rl/spa/weightsync"
	"github.com/spa-rl/spa/worldmodel"
)

// Options configure a pipeline run.
type Options struct {
	Config config.Config
	// Dir is the run directory (runs/<id>); ID names the run on the bus.
	Dir, ID string
	// Resume continues a run from its last completed stage or PPO step.
	Resume bool
	// Log receives progress lines.
	Log io.Writer
	// adjustModel changes the from-scratch model's config before it is made (a test's smaller
	// model); nil keeps the tiny preset.
	adjustModel func(*model.Config)
}

// Training puzzles start at trainSeedBase. Each run.seed has its own range of trainSeedRange
// seeds (warm-up, self-play and PPO count groups from its start), so runs with other seeds train
// on other puzzles, not only from another initialisation and other samples. Validation uses
// val_seed..val_seed+val_puzzles-1, below every range (open refuses a range that reaches it).
const (
	trainSeedBase  = 1_000_000
	trainSeedRange = 100_000
)

// trainSeeds is the first training puzzle of a run.seed.
func trainSeeds(seed int) int64 { return trainSeedBase + trainSeedRange*int64(seed) }

// pipeline is one run's live parts.
type pipeline struct {
	o       Options
	cfg     config.Config
	st      *state
	metrics *metricslog.Log
	mu      sync.Mutex

	ex *torchrt.Executor
	// stack is the bus, the env hosts and (without rollout.endpoints) the server; b, pols and pub
	// are its parts.
	stack *stack.Stack
	b     *bus.Bus
	pols  *bus.Policies
	pub   *bus.Publisher
	// endpoints are the inference servers' base URLs (the embedded one, or rollout.endpoints),
	// and servers their weight sync; external is set for rollout.endpoints.
	endpoints []string
	servers   []weightsync.Syncer
	external  bool
	initDir   string // the checkpoint as initialised (or run.model)
	tokens    *rollout.Tokens
	spec      envs.Spec
	// pplData holds the state-perplexity conversations per rendering.
	pplData map[envs.RenderMode][]learner.SFTExample
	// warmupPlayer, when set, plays the warm-up episodes instead of the random explorer (the
	// learning-signal test's stand-in for a pretrained model's reading of its input).
	warmupPlayer func(seed uint64) rollout.LLM
}

// Run executes the pipeline (see the package doc and docs/run.md) and writes the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	p, err := open(ctx, o)
	if err != nil {
		return nil, err
	}
	defer p.close()
	base, err := p.warmup(ctx, p.initDir)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(p.cfg.Run.Methods, worldModelSFT) {
		if err := p.selfPlay(ctx, base); err != nil {
			return nil, err
		}
	}
	for _, m := range p.cfg.Run.Methods {
		if err := p.method(ctx, m, base); err != nil {
			return nil, fmt.Errorf("method %s: %w", m, err)
		}
	}
	return p.report()
}

// open brings up what every method shares: the run directory and its state, the starting
// checkpoint and the embedded stack (bus, env hosts, server). The caller closes the pipeline.
func open(ctx context.Context, o Options) (*pipeline, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	p := &pipeline{o: o, cfg: o.Config}
	if r := o.Config.Run; r.ValSeed+r.ValPuzzles > trainSeedBase {
		return nil, fmt.Errorf("run.val_seed %d + run.val_puzzles %d reach the training puzzles, which start at seed %d", r.ValSeed, r.ValPuzzles, trainSeedBase)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if p.st, err = loadState(o.Dir, o.Resume); err != nil {
		return nil, err
	}
	p.st.finished = func(stage string, took time.Duration) {
		p.logf("stage %s: done in %s", stage, took.Round(100*time.Millisecond))
		p.record(map[string]any{"stage": "timing", "name": stage, "seconds": took.Seconds()})
	}
	if p.metrics, err = metricslog.Open(filepath.Join(o.Dir, "metrics.jsonl")); err != nil {
		return nil, err
	}
	p.ex = torchrt.NewExecutor()
	// A failure from here on closes what was started (the returns below hand back nil, so the
	// pipeline is held here rather than in a named result).
	opened := false
	defer func() {
		if !opened {
			p.close()
		}
	}()
	if err := p.saveConfig(); err != nil {
		return nil, err
	}
	initDir, err := p.initModel(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.start(ctx, initDir); err != nil {
		return nil, err
	}
	p.initDir = initDir
	opened = true
	return p, nil
}

// saveConfig writes the merged configuration the run uses, for the record and for resume,
// without its secrets (a resume takes those from its own flags and SPA_* variables again).
func (p *pipeline) saveConfig() error {
	data, err := json.MarshalIndent(config.WithoutSecrets(p.cfg), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p.o.Dir, "config.json"), append(data, '\n'), 0o644)
}

// record appends one line to metrics.jsonl.
func (p *pipeline) record(v map[string]any) { record(p.metrics, v) }

// stageIO is where the pipeline's training stages run and report: its torch thread, its metrics
// and its log.
func (p *pipeline) stageIO() StageIO { return StageIO{Metrics: p.metrics, Log: p.o.Log, Exec: p.ex} }

func (p *pipeline) logf(format string, args ...any) {
	fmt.Fprintf(p.o.Log, format+"\n", args...)
}

// initModel returns the starting checkpoint: run.model, or a tiny model made from scratch in
// <dir>/init (domain tokenizer, random weights).
func (p *pipeline) initModel(ctx context.Context) (string, error) {
	if p.cfg.Run.Model != "" {
		return p.cfg.Run.Model, nil
	}
	dir := filepath.Join(p.o.Dir, "init")
	if p.st.done("init") {
		return dir, nil
	}
	p.logf("init: training the domain tokenizer and initialising the tiny model in %s", dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	err := p.ex.Do(ctx, func() error {
		_, _, err := model.Init(dir, model.InitOptions{Seed: uint64(p.cfg.Run.Seed), Adjust: p.o.adjustModel})
		return err
	})
	if err != nil {
		return "", err
	}
	return dir, p.st.complete("init", nil)
}

// start brings up the embedded default: NATS with JetStream in the run directory (or bus.url),
// env hosts on the bus, and the inference server on 127.0.0.1 over real HTTP.
func (p *pipeline) start(ctx context.Context, initDir string) error {
	bo := BusOptions(p.cfg.Bus, "spa-run")
	if bo.URL == "" && bo.StoreDir == "" {
		bo.StoreDir = bus.DefaultStoreDir(p.o.Dir)
	}
	env := p.cfg.Env.Name
	st, err := stack.Start(ctx, stack.Options{Bus: bo, Env: env, Replicas: p.cfg.Env.Replicas, SessionTTL: p.cfg.Env.SessionTTL})
	if err != nil {
		return err
	}
	p.stack, p.b, p.pols, p.pub = st, st.Bus, st.Policies, st.Publisher
	probe, err := p.newEnv(ctx)
	if err != nil {
		return fmt.Errorf("environment %s on the bus: %w", env, err)
	}
	p.spec = probe.Spec()
	_ = envs.Close(probe)

	if p.tokens, err = rollout.LoadTokens(initDir); err != nil {
		return err
	}
	if len(p.cfg.Rollout.Endpoints) > 0 {
		return p.useExternal(ctx, env)
	}
	dev, err := model.ParseDevice(p.cfg.Learner.Device)
	if err != nil {
		return err
	}
	eopts, sopts := ServerOptions(p.cfg.Server)
	// The starting checkpoint is "init-v0", so that no method's "<method>-v0" is taken by it.
	eopts.Name, eopts.Device = "init", dev
	if err := st.Serve(ctx, initDir, eopts, sopts); err != nil {
		return err
	}
	p.endpoints = []string{st.BaseURL}
	p.servers = []weightsync.Syncer{weightsync.SpaServer(st.BaseURL, p.cfg.Server.AdminKey)}
	p.logf("embedded: NATS %s, inference server %s, %s on the bus", orEmbedded(p.cfg.Bus.URL), st.BaseURL, env)
	return nil
}

// useExternal serves the run from rollout.endpoints instead of the embedded server. Each is a spa
// serve (several spread the episodes); every version the run makes is loaded into all of them
// through /update_weights (server.admin_key), from this machine's run directory, which they
// must be able to read. The servers' tokenizer must be the run's (spa model init makes the same
// domain tokenizer as a from-scratch run), which the first load checks.
func (p *pipeline) useExternal(ctx context.Context, env string) error {
	p.external = true
	p.endpoints = p.cfg.Rollout.Endpoints
	for _, url := range p.endpoints {
		if err := probeServer(ctx, url, p.cfg.Server.APIKey); err != nil {
			return fmt.Errorf("rollout.endpoints: %w", err)
		}
		p.servers = append(p.servers, weightsync.SpaServer(url, p.cfg.Server.AdminKey))
	}
	p.logf("external: NATS %s, %d inference server(s) %s, %s on the bus; versions are named %s-<stage>-v<N>",
		orEmbedded(p.cfg.Bus.URL), len(p.endpoints), strings.Join(p.endpoints, ", "), env, p.o.ID)
	return nil
}

// probeServer checks that an OpenAI-compatible server answers /models within 10 s.
func probeServer(ctx context.Context, baseURL, key string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/models", nil)
	if err != nil {
		return fmt.Errorf("%s: %w", baseURL, err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	// A one-shot client: a pooled connection to whatever held this port before would fail as if
	// the server did.
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := probe.Do(req)
	if err != nil {
		return fmt.Errorf("%s does not answer: %w", baseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/models answered %s (server.api_key?)", baseURL, resp.Status)
	}
	// Weights reach the servers through spa serve's /update_weights, which vLLM and SGLang do
	// not have; say so now rather than at the first sync.
	var models struct {
		Data []struct {
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&models); err != nil {
		return fmt.Errorf("%s/models: %w", baseURL, err)
	}
	for _, m := range models.Data {
		if m.OwnedBy != "spa" {
			return fmt.Errorf("%s serves models owned by %q, not spa serve: spa run --endpoint loads each version through spa serve's /update_weights; with vLLM or SGLang, run the stages by hand (docs/deploy.md)", baseURL, m.OwnedBy)
		}
	}
	return nil
}

// versionPrefix is what the versions of a stage's checkpoints are called: the stage's name
// ("spa", "selfplay", "spa-eval-base") on the embedded server, which this run owns; on external
// servers, which may serve other runs and start with their own "<name>-v0", the run id comes
// first.
func (p *pipeline) versionPrefix(name string) string {
	if p.external {
		return p.o.ID + "-" + name
	}
	return name
}

// ServerOptions maps the config's server section onto the engine's and the HTTP layer's options;
// the caller adds the served name and the device.
func ServerOptions(c config.Server) (inference.Options, api.Options) {
	return inference.Options{
			MaxBatch: c.MaxBatch, MaxModelLen: c.MaxModelLen, KVCacheMB: c.KVCacheMB, MaxVersions: c.MaxVersions,
			MaxWaiting: c.MaxWaiting, LoadTimeout: c.LoadTimeout,
		}, api.Options{
			APIKey: c.APIKey, AdminKey: c.AdminKey, BodyTimeout: c.BodyTimeout, MaxRequestSeqs: c.MaxRequestSeqs,
			WeightsRoot: c.WeightsRoot,
		}
}

func orEmbedded(url string) string {
	if url == "" {
		return "embedded (store in the run directory)"
	}
	return url
}

// newEnv dials the environment on the bus.
func (p *pipeline) newEnv(ctx context.Context) (envs.Env, error) {
	return busenv.Dial(ctx, p.b.Conn, p.cfg.Env.Name, busenv.RemoteOptions{Variant: p.cfg.Env.Variant, Timeout: p.cfg.Bus.Timeout})
}

// close stops everything open started, in reverse order.
func (p *pipeline) close() {
	defer func() {
		if p.ex != nil {
			p.ex.Close()
		}
		if p.metrics != nil {
			p.metrics.Close()
		}
	}()
	p.stack.Close()
}

// episodeOptions are the rollout settings for a prompt mode and state rendering.
func (p *pipeline) episodeOptions(mode rollout.Mode, render envs.RenderMode) rollout.EpisodeOptions {
	r := p.cfg.Rollout
	return rollout.EpisodeOptions{
		PromptOptions: rollout.PromptOptions{Mode: mode, Render: render, MaxActionsPerTurn: r.MaxActionsPerTurn},
		MaxTurns:      r.MaxTurns, MaxTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, TopK: r.TopK,
	}
}

// clients are HTTP clients of the inference servers, one each.
func (p *pipeline) clients(chatMode bool) ([]rollout.LLM, error) {
	var out []rollout.LLM
	for _, url := range p.endpoints {
		c, err := rollout.NewClient(rollout.ClientOptions{BaseURL: url, APIKey: p.cfg.Server.APIKey, Chat: chatMode,
			Timeout: p.cfg.Rollout.RequestTimeout, Retries: p.cfg.Rollout.Retries})
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// router spreads episodes over llms (each episode stays on one; a failing one rests).
func router(llms []rollout.LLM) (*rollout.Router, error) {
	names := make([]string, len(llms))
	for i := range names {
		names[i] = fmt.Sprintf("llm%d", i)
	}
	return rollout.NewRouter(names, llms)
}

// play runs groups × group size episodes with llms (the router spreads episodes over them),
// publishes them to run's stream, and returns them in order.
func (p *pipeline) play(ctx context.Context, run, label string, llms []rollout.LLM, tokens *rollout.Tokens, eo rollout.EpisodeOptions, groups, firstGroup int) ([]*bus.Trajectory, error) {
	rt, err := router(llms)
	if err != nil {
		return nil, err
	}
	total := groups * p.cfg.Rollout.GroupSize
	bar := progress.New(p.o.Log, label, total)
	var mu sync.Mutex
	var out []*bus.Trajectory
	successes := 0
	var firstFailure error
	stats, err := rollout.RunWorkers(ctx, rollout.WorkerOptions{
		Run: run, Worker: "w", Episode: eo, Workers: p.cfg.Rollout.Workers, Groups: groups, GroupSize: p.cfg.Rollout.GroupSize,
		FirstGroup: firstGroup, SeedBase: trainSeeds(p.cfg.Run.Seed), NewEnv: func() (envs.Env, error) { return p.newEnv(ctx) },
		Router: rt, Tokens: tokens,
		Publish: func(ctx context.Context, tr *bus.Trajectory) error {
			if err := p.pub.Publish(ctx, tr); err != nil {
				return err
			}
			mu.Lock()
			out = append(out, tr)
			if tr.Success {
				successes++
			}
			bar.Set(len(out), fmt.Sprintf("success %.0f%%", 100*float64(successes)/float64(len(out))))
			mu.Unlock()
			return nil
		},
		Log: func(format string, args ...any) {
			mu.Lock()
			if firstFailure == nil {
				firstFailure = fmt.Errorf(format, args...)
			}
			mu.Unlock()
		},
	})
	bar.Done()
	if err != nil {
		return nil, err
	}
	// The batch has a fixed size that the learner waits for, so a lost episode is an error here.
	if stats.Failed > 0 {
		return nil, fmt.Errorf("%s: %d of %d episodes failed; the first: %w", label, stats.Failed, total, firstFailure)
	}
	slices.SortFunc(out, func(a, b *bus.Trajectory) int { return compareIDs(a.ID, b.ID) })
	return out, nil
}

func compareIDs(a, b string) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// writeTrajectories writes trajectories as JSON lines.
func writeTrajectories(path string, trs []*bus.Trajectory) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for _, tr := range trs {
		data, err := bus.EncodeTrajectory(tr)
		if err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(append(data, '\n')); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// warmup gives a from-scratch model the answer format (its stand-in for an instruct model's
// prior): SFT on episodes in the base prompt played by the random explorer, the guided player
// (run.warmup_skill) or p.warmupPlayer, half with raw and half with coordinate states. Every
// method starts from its result. A pretrained run.model skips it.
func (p *pipeline) warmup(ctx context.Context, initDir string) (string, error) {
	if p.cfg.Run.Model != "" || p.cfg.Run.WarmupEpisodes == 0 {
		return initDir, nil
	}
	out := filepath.Join(p.o.Dir, "warmup")
	if p.st.done("warmup") {
		return p.st.Stages["warmup"].Checkpoint, nil
	}
	n := p.cfg.Run.WarmupEpisodes
	guide, err := p.guide()
	if err != nil {
		return "", err
	}
	var trs []*bus.Trajectory
	for i, render := range []envs.RenderMode{envs.Raw, envs.Coords} {
		seed := uint64(p.cfg.Run.Seed)*7 + uint64(i)
		ex := NewExplorer(p.spec, rollout.Base, p.cfg.Rollout.MaxActionsPerTurn, seed)
		ex.Guide, ex.Skill = guide, p.cfg.Run.WarmupSkill
		var player rollout.LLM = ex
		if p.warmupPlayer != nil {
			player = p.warmupPlayer(seed)
		}
		groups := (n/2 + p.cfg.Rollout.GroupSize - 1) / p.cfg.Rollout.GroupSize
		part, err := p.play(ctx, p.o.ID+"-warmup-"+string(render), "warm-up play ("+string(render)+")", []rollout.LLM{player}, nil, p.episodeOptions(rollout.Base, render), groups, 0)
		if err != nil {
			return "", err
		}
		trs = append(trs, part...)
	}
	if err := writeTrajectories(filepath.Join(p.o.Dir, "warmup.jsonl"), trs); err != nil {
		return "", err
	}
	exs := make([]learner.SFTExample, len(trs))
	for i, tr := range trs {
		exs[i] = worldmodel.GroundTruth(tr, rollout.SystemPrompt, false)
	}
	if err := learner.WriteSFTExamples(filepath.Join(p.o.Dir, "warmup-sft.jsonl"), exs); err != nil {
		return "", err
	}
	epochs := p.cfg.Run.WarmupEpochs
	if epochs == 0 {
		epochs = p.cfg.Learner.SFT.Epochs
	}
	ckpt, _, err := p.sft(ctx, "warmup", initDir, exs, out, epochs, p.cfg.Run.WarmupLR)
	if err != nil {
		return "", err
	}
	return ckpt, p.st.complete("warmup", &stageResult{Checkpoint: ckpt})
}

// guide is the warm-up player's planner for run.warmup_skill, or nil at skill 0.
func (p *pipeline) guide() (envs.Planner, error) {
	if p.cfg.Run.WarmupSkill == 0 {
		return nil, nil
	}
	env, err := envs.New(p.spec.Name, p.spec.Variant)
	if err != nil {
		return nil, fmt.Errorf("run.warmup_skill %g needs a built-in environment that plans: %w", p.cfg.Run.WarmupSkill, err)
	}
	g, ok := env.(envs.Planner)
	if !ok {
		return nil, fmt.Errorf("run.warmup_skill %g: %s cannot plan a solution (set it to 0 for the random explorer)", p.cfg.Run.WarmupSkill, p.spec.Name)
	}
	return g, nil
}

// selfPlay collects world-model episodes, replaces their observation and prediction bodies with
// the true states, filters them, and writes the SFT data (docs/method.md steps 1–3).
func (p *pipeline) selfPlay(ctx context.Context, base string) error {
	if p.st.done("selfplay") {
		return nil
	}
	run := p.o.ID + "-selfplay"
	n := p.cfg.Run.SelfPlay
	var llms []rollout.LLM
	explorer := NewExplorer(p.spec, rollout.WorldModel, p.cfg.Rollout.MaxActionsPerTurn, uint64(p.cfg.Run.Seed)*13)
	how, err := ParseExploration(p.cfg.Run.Explore)
	if err != nil {
		return err
	}
	how = how.For(p.cfg.Run.Model != "")
	switch how {
	case ExploreRandom:
		llms = []rollout.LLM{explorer}
	case ExplorePolicy, ExploreMix:
		// The policy explores in chat mode: self-play needs the text, not the token ids.
		if err := p.loadVersion(ctx, run, p.versionPrefix("selfplay"), 0, base); err != nil {
			return err
		}
		if llms, err = p.clients(true); err != nil {
			return err
		}
		if how == ExploreMix {
			llms = append(llms, explorer)
		}
	}
	eo := p.episodeOptions(rollout.WorldModel, envs.Coords)
	eo.Model = bus.VersionName(p.versionPrefix("selfplay"), 0)
	groups := (n + p.cfg.Rollout.GroupSize - 1) / p.cfg.Rollout.GroupSize
	trs, err := p.play(ctx, run, "self-play ("+string(how)+")", llms, nil, eo, groups, 0)
	if err != nil {
		return err
	}
	if err := writeTrajectories(filepath.Join(p.o.Dir, "selfplay.jsonl"), trs); err != nil {
		return err
	}
	exs := make([]learner.SFTExample, len(trs))
	for i, tr := range trs {
		exs[i] = worldmodel.GroundTruth(tr, rollout.SystemPrompt, p.cfg.Run.GroundTruth)
	}
	malformed, duplicate := 0, 0
	if p.cfg.Run.Filter {
		exs, malformed, duplicate = worldmodel.Filter(exs)
	}
	if len(exs) == 0 {
		return fmt.Errorf("self-play (%s): none of %d episodes gave a world-model conversation (%d malformed): the explorer does not write <think><observation>…</observation><prediction>…</prediction></think><answer>…</answer>; with a model that has not learnt the format, set run.explore=random or mix", how, len(trs), malformed)
	}
	if err := learner.WriteSFTExamples(filepath.Join(p.o.Dir, "sft.jsonl"), exs); err != nil {
		return err
	}
	p.logf("self-play: %d episodes, %d SFT conversations (%d malformed, %d duplicates dropped)", len(trs), len(exs), malformed, duplicate)
	p.record(map[string]any{"stage": "selfplay", "episodes": len(trs), "sft_examples": len(exs), "malformed": malformed, "duplicates": duplicate})
	return p.st.complete("selfplay", &stageResult{Counts: map[string]int{"episodes": len(trs), "sft_examples": len(exs), "malformed": malformed, "duplicates": duplicate}})
}

// sft fine-tunes from on exs into out (resuming inside the stage) and returns the final checkpoint.
// sft fine-tunes from on exs for epochs; lr 0 means learner.sft.lr.
func (p *pipeline) sft(ctx context.Context, label, from string, exs []learner.SFTExample, out string, epochs int, lr float64) (string, learner.SFTResult, error) {
	seqs, dropped, err := learner.SFTSequences(p.tokens, exs, p.cfg.Learner.SFT.MaxLength, p.cfg.Learner.SFT.MaskState)
	if err != nil {
		return "", learner.SFTResult{}, err
	}
	train, val := learner.SplitValidation(seqs, 0.05)
	o := SFTOptions(p.cfg.Learner, uint64(p.cfg.Run.Seed))
	o.Epochs = epochs
	if lr > 0 {
		o.LR = lr
	}
	o.Checkpoints = &learner.Checkpointer{Dir: out, TokenizerDir: from, DType: p.cfg.Learner.SaveDType, Keep: 1}
	o.Resume = true
	po, err := PolicyOptions(p.cfg.Learner, uint64(p.cfg.Run.Seed))
	if err != nil {
		return "", learner.SFTResult{}, err
	}
	res, err := RunSFT(ctx, SFTStage{Name: label + "-sft", From: from, Train: train, Val: val, Policy: po, Options: o, StageIO: p.stageIO()})
	if err != nil {
		return "", res, err
	}
	p.logf("%s sft: %d sequences (%d too long), %d steps, val loss %s, %.0f trained tokens/s", label, len(seqs), dropped, res.Steps, LossText(res.ValLoss), res.TokensPerSec)
	ckpt, _, err := learner.Latest(out)
	return ckpt, res, err
}

// loadVersion puts a checkpoint on the server as <prefix>-v<n> through the weight-sync interface
// (HTTP /update_weights, as any spa server) and points run's policy there. A version the KV
// already holds (a resumed run) is loaded again without moving the KV.
func (p *pipeline) loadVersion(ctx context.Context, run, prefix string, n int64, dir string) error {
	abs, _ := filepath.Abs(dir)
	v := weightsync.Version{Number: n, Model: bus.VersionName(prefix, n), Dir: abs}
	// The server takes a version it already has from the same directory as a no-op; the policy
	// KV is set either way, since the workers wait for it.
	f := &weightsync.Fleet{Servers: p.servers, Patience: p.cfg.Learner.SyncPatience, Logf: p.logf}
	if err := f.Sync(ctx, v); err != nil {
		return err
	}
	if err := p.pols.Set(ctx, run, bus.Policy{Version: n, Model: v.Model, WeightDir: abs}); err != nil && !errors.Is(err, bus.ErrStaleVersion) {
		return err
	}
	return nil
}
