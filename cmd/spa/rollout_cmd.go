package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/busenv"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/stack"
)

// loadTokens reads a checkpoint directory's tokenizer and chat template for token mode.
func loadTokens(dir string) (*rollout.Tokens, error) {
	if dir == "" {
		return nil, errors.New("token mode needs the policy's tokenizer: pass --tokenizer DIR (the checkpoint directory)")
	}
	return rollout.LoadTokens(dir)
}

// episodeOptions maps the rollout section onto episode options.
func episodeOptions(c config.Config) (rollout.EpisodeOptions, error) {
	mode, err := rollout.ParseMode(c.Rollout.Prompt)
	if err != nil {
		return rollout.EpisodeOptions{}, err
	}
	render := envs.Raw
	if c.Env.Coords {
		render = envs.Coords
	}
	return rollout.EpisodeOptions{
		PromptOptions: rollout.PromptOptions{Mode: mode, Render: render, MaxActionsPerTurn: c.Rollout.MaxActionsPerTurn},
		MaxTurns:      c.Rollout.MaxTurns, MaxTokens: c.Rollout.MaxTokens, Temperature: c.Rollout.Temperature,
		TopP: c.Rollout.TopP, TopK: c.Rollout.TopK, Model: c.Rollout.Model,
	}, nil
}

func clients(c config.Config, chatMode bool) ([]string, []rollout.LLM, error) {
	if len(c.Rollout.Endpoints) == 0 {
		return nil, nil, errors.New("pass --endpoint URL (a vLLM, SGLang or spa serve base URL; several comma-separated)")
	}
	var llms []rollout.LLM
	for _, u := range c.Rollout.Endpoints {
		cl, err := rollout.NewClient(rollout.ClientOptions{BaseURL: u, APIKey: os.Getenv("OPENAI_API_KEY"), Chat: chatMode, Timeout: c.Rollout.RequestTimeout, Retries: c.Rollout.Retries})
		if err != nil {
			return nil, nil, err
		}
		llms = append(llms, cl)
	}
	return c.Rollout.Endpoints, llms, nil
}

func newEvalCmd() *cobra.Command {
	var tokDir string
	var puzzles, firstSeed, k, concurrency int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval --endpoint URL --env ENV [--puzzles 128] [--k 8]",
		Short: "Pass@1 and Pass@k of a served model on an environment",
		Long: `Play --puzzles fixed puzzles (seeds --first-seed..--first-seed+N-1, from 0 by default) --k times each against an OpenAI-compatible endpoint
and print Pass@1 (mean success), Pass@k (puzzles with at least one success), the unbiased pass@k
estimator, mean reward, mean actions, the share of turns with a format error, and how much the
first move depends on the puzzle (mutual information in bits, beside its chance level).

rollout.mode token (default) sends token ids to /v1/completions and needs --tokenizer (the
checkpoint directory); rollout.mode chat uses /v1/chat/completions, for API models that only offer
chat. OPENAI_API_KEY is sent as the bearer token when set. Sampling follows rollout.* (temperature 1,
as the paper validates).`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&tokDir, "tokenizer", "", "checkpoint directory with tokenizer.json (token mode)")
	cmd.Flags().IntVar(&puzzles, "puzzles", 128, "puzzles (seeds --first-seed..--first-seed+N-1)")
	cmd.Flags().IntVar(&firstSeed, "first-seed", 0, "seed of the first puzzle (tune on one range, report on another)")
	cmd.Flags().IntVar(&k, "k", 8, "samples per puzzle")
	cmd.Flags().IntVar(&concurrency, "concurrency", 0, "episodes at once (default rollout.workers)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().String("model", "", "model name to request (rollout.model)")
	cmd.Flags().String("mode", "", "token or chat (rollout.mode)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if m, _ := cmd.Flags().GetString("model"); m != "" {
			cf.sets = append(cf.sets, "rollout.model="+m)
		}
		if m, _ := cmd.Flags().GetString("mode"); m != "" {
			cf.sets = append(cf.sets, "rollout.mode="+m)
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		eo, err := episodeOptions(cfg)
		if err != nil {
			return err
		}
		chatMode := cfg.Rollout.Mode == "chat"
		var tokens *rollout.Tokens
		if !chatMode {
			if tokens, err = loadTokens(tokDir); err != nil {
				return err
			}
		}
		names, llms, err := clients(cfg, chatMode)
		if err != nil {
			return err
		}
		router, err := rollout.NewRouter(names, llms)
		if err != nil {
			return err
		}
		if _, err := envs.New(cfg.Env.Name, cfg.Env.Variant); err != nil {
			return err
		}
		if concurrency <= 0 {
			concurrency = cfg.Rollout.Workers
		}
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		bar := newCounter(cmd.ErrOrStderr(), "eval "+cfg.Env.Name)
		res, err := rollout.Evaluate(ctx, func() (envs.Env, error) { return envs.New(cfg.Env.Name, cfg.Env.Variant) }, router.Episode, tokens, rollout.EvalOptions{
			Episode: eo, Puzzles: puzzles, FirstSeed: firstSeed, K: k, Concurrency: concurrency,
			Progress: func(done, total int) { bar.update(uint64(done), uint64(total)) },
		})
		bar.done()
		if err != nil {
			return err
		}
		if asJSON {
			return encodeJSON(cmd, res)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "env\t%s %s (%s prompt, %s states)\n", res.Env, res.Variant, eo.Mode, eo.Render)
		fmt.Fprintf(tw, "model\t%s via %s\n", res.Model, strings.Join(names, ", "))
		fmt.Fprintf(tw, "episodes\t%d (%d puzzles x %d, seeds %d..%d), %d failed\n", res.Episodes, res.Puzzles, res.K, res.FirstSeed, res.FirstSeed+res.Puzzles-1, res.Failed)
		fmt.Fprintf(tw, "Pass@1\t%.1f%%\n", 100*res.Pass1)
		fmt.Fprintf(tw, "Pass@%d\t%.1f%% (unbiased estimator %.1f%%)\n", res.K, 100*res.PassK, 100*res.PassKUnbiased)
		curve := make([]string, len(res.PassAt))
		for i, v := range res.PassAt {
			curve[i] = fmt.Sprintf("%.1f", 100*v)
		}
		fmt.Fprintf(tw, "pass@1..%d %%\t%s (unbiased estimator)\n", res.K, strings.Join(curve, " "))
		fmt.Fprintf(tw, "mean reward\t%.3f\n", res.MeanReward)
		fmt.Fprintf(tw, "mean actions\t%.2f\n", res.MeanActions)
		fmt.Fprintf(tw, "format errors\t%.1f%% of turns\n", 100*res.FormatErrors)
		fmt.Fprintf(tw, "first move from the state\t%.3f bits (%.3f by chance, p %.2f)\n", res.ActionInfo, res.ActionInfoChance, res.ActionInfoP)
		return tw.Flush()
	}
	return cmd
}

func newRolloutCmd() *cobra.Command {
	var tokDir, run, worker string
	var groups int
	var remoteEnv bool
	cmd := &cobra.Command{
		Use:   "rollout --endpoint URL[,URL] --bus URL --run RUN --tokenizer DIR",
		Short: "Play episodes against inference servers and publish trajectories to the bus",
		Long: `Run rollout workers: rollout.workers episodes at once, in groups of rollout.group_size that share
a seed, spread over the --endpoint servers (each episode stays on one server; a failing server is
backed off and its episodes restarted elsewhere). Each trajectory, with its exact token ids and
logprobs, is published to the SPA_TRAJ stream on spa.traj.<run>.

The worker watches the run's policy version in the spa_policy KV bucket and asks for the newest
model for new episodes, so a policy swap needs no restart. --remote-env plays environments served
on the bus ('spa env serve') instead of local ones. Ctrl-C stops starting episodes and lets those in
flight finish.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&tokDir, "tokenizer", "", "checkpoint directory with tokenizer.json")
	cmd.Flags().StringVar(&run, "run", "", "run id (default run.id)")
	cmd.Flags().StringVar(&worker, "worker", "", "worker name in trajectory ids; it also picks the puzzle seeds (default: <host>-<pid>)")
	cmd.Flags().IntVar(&groups, "groups", 0, "groups to play, then stop (0: until interrupted)")
	cmd.Flags().BoolVar(&remoteEnv, "remote-env", false, "play environments served on the bus")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if run == "" {
			run = cfg.Run.ID
		}
		if err := bus.CheckName("run", run); err != nil {
			return fmt.Errorf("%w (pass --run RUN)", err)
		}
		if cfg.Bus.URL == "" {
			return errors.New("spa rollout publishes to a bus: pass --bus nats://HOST:PORT")
		}
		if worker == "" {
			h, _ := os.Hostname()
			worker = strings.Map(func(r rune) rune {
				if r == '.' || r == ' ' {
					return '-'
				}
				return r
			}, h) + "-" + strconv.Itoa(os.Getpid())
		}
		eo, err := episodeOptions(cfg)
		if err != nil {
			return err
		}
		tokens, err := loadTokens(tokDir)
		if err != nil {
			return err
		}
		names, llms, err := clients(cfg, false)
		if err != nil {
			return err
		}
		router, err := rollout.NewRouter(names, llms)
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		st, err := stack.Start(ctx, stack.Options{Bus: busOptions(cfg.Bus, "spa-rollout-"+worker)})
		if err != nil {
			return err
		}
		defer st.Close()
		b, pub, pols := st.Bus, st.Publisher, st.Policies
		policy, err := pols.Watch(context.WithoutCancel(ctx), run)
		if err != nil {
			return err
		}
		newEnv := func() (envs.Env, error) { return envs.New(cfg.Env.Name, cfg.Env.Variant) }
		if remoteEnv {
			newEnv = func() (envs.Env, error) {
				return busenv.Dial(ctx, b.Conn, cfg.Env.Name, busenv.RemoteOptions{Variant: cfg.Env.Variant, Timeout: cfg.Bus.Timeout})
			}
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "spa rollout: run %s, %d workers, %s over %d server(s), publishing to %s\n", run, cfg.Rollout.Workers, cfg.Env.Name, len(names), bus.TrajSubject(run))
		stats, err := rollout.RunWorkers(ctx, rollout.WorkerOptions{
			Run: run, Worker: worker, Incarnation: incarnation(), Episode: eo, Workers: cfg.Rollout.Workers, Groups: groups, GroupSize: cfg.Rollout.GroupSize,
			SeedBase: rollout.WorkerSeedBase(cfg.Run.Seed, worker), NewEnv: newEnv, Router: router, Tokens: tokens, Policy: policy,
			Publish: func(ctx context.Context, tr *bus.Trajectory) error { return pub.Publish(ctx, tr) },
			Log:     func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), "spa rollout: "+format+"\n", args...) },
		})
		closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cerr := pub.Close(closeCtx); cerr != nil && err == nil {
			err = cerr
		}
		fmt.Fprintf(cmd.OutOrStdout(), "episodes %d (success %d), turns %d, restarts %d, failed %d\n", stats.Episodes, stats.Successes, stats.Turns, stats.Restarts, stats.Failed)
		for _, s := range router.Stats() {
			fmt.Fprintf(cmd.OutOrStdout(), "server %s: %d episodes, %d requests, %d failures\n", s.Name, s.Episodes, s.Requests, s.Failures)
		}
		return err
	}
	return cmd
}

func encodeJSON(cmd *cobra.Command, v any) error {
	return json.NewEncoder(cmd.OutOrStdout()).Encode(v)
}

// incarnation is a short random tag for this process, so that a restarted worker's trajectory ids
// never collide with its predecessor's (JetStream would drop them as duplicates).
func incarnation() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
