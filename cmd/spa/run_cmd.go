package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/harness"
)

func newRunCmd() *cobra.Command {
	var preset, resume, compare, modelDir string
	cmd := &cobra.Command{
		Use:   "run [--preset smoke|quick|long|paper] [--compare spa,vanilla,state-estimation] [--resume runs/ID]",
		Short: "The SPA pipeline end to end: self-play, ground truth, SFT, PPO, evaluation, report",
		Long: `Run the SPA recipe and its baselines on one environment (env.name, Sokoban by default):

  1. init       a tiny Qwen2 with the domain tokenizer, or run.model (a pretrained checkpoint)
  2. warm-up    (from scratch only) SFT on play in the base prompt, the stand-in for an instruct
                model: the random explorer teaches the answer format; the guided player
                (run.warmup_skill, Sokoban) also some reading of the board
  3. self-play  run.selfplay_episodes world-model episodes (run.explore: random, policy or mix)
  4. ground truth and filtering: true states replace the observation/prediction bodies
  5. world-model SFT (spa only; a from-scratch model replays the warm-up data, run.sft_replay)
  6. PPO        learner.ppo.steps steps; rollout workers query the inference server over HTTP,
                environments run on the bus, trajectories go through JetStream to the learner,
                and new weights reach the server through the weight-sync interface
  7. evaluation Pass@1 and Pass@k with 95% bootstrap intervals over puzzles, greedy Pass@1,
                reward, actions per episode, format errors and state perplexity per method: the
                model as initialised (from scratch, once), the base model, after SFT (spa) and
                after PPO; paired differences between methods on the same puzzles

Methods (run.methods, or --compare): spa (the recipe), vanilla (PPO from the base model on raw
states) and state-estimation (PPO with coordinates, no SFT), on the same seeds and budget.

Everything runs in this process: an embedded NATS with JetStream in the run directory, the
inference server on 127.0.0.1, env hosts, rollout workers and the learner. --bus URL uses a NATS
cluster instead; --endpoint URL[,URL] uses running spa serve processes instead of the embedded
server (they must read the run directory; versions reach them through /update_weights with
server.admin_key, named <run id>-<stage>-v<N>). Outputs go to
<run.dir>/<run id>/: trajectories, sft.jsonl, checkpoints, metrics.jsonl, state.json, report.md and
PNG plots; the log and the report give each stage's wall time. --resume <dir> continues from the last completed stage or PPO step, with the run's saved
configuration; that file holds no secrets, so pass keys again (SPA_SERVER_ADMIN_KEY, --set). Presets: smoke
(minutes, for tests), quick (the default; about 14 minutes on 2 cores), long (quick with the paper's 5
turns and 80 PPO steps; about an hour), paper (the paper's
hyperparameters, for GPUs).`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&preset, "preset", "", "smoke, quick, long or paper (run.preset)")
	cmd.Flags().StringVar(&resume, "resume", "", "continue the run in this directory")
	cmd.Flags().StringVar(&compare, "compare", "", "methods to run side by side, comma-separated (run.methods)")
	cmd.Flags().StringVar(&modelDir, "model", "", "pretrained starting checkpoint (run.model)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if preset != "" {
			cf.sets = append([]string{"run.preset=" + preset}, cf.sets...)
		}
		if compare != "" {
			cf.sets = append(cf.sets, "run.methods="+compare)
		}
		if modelDir != "" {
			cf.sets = append(cf.sets, "run.model="+modelDir)
		}
		dir, id := "", ""
		var cfg config.Config
		if resume != "" {
			// A resumed run keeps the configuration it started with.
			dir, id = filepath.Clean(resume), filepath.Base(filepath.Clean(resume))
			saved, err := os.ReadFile(filepath.Join(dir, "config.json"))
			if err != nil {
				return fmt.Errorf("resume %s: %w (is it a run directory?)", dir, err)
			}
			if err := json.Unmarshal(saved, &cfg); err != nil {
				return fmt.Errorf("resume %s: config.json: %w", dir, err)
			}
			// config.json holds no secrets: keys and passwords come from this invocation's
			// flags, SPA_* variables and --config file, as they did for the run's start.
			current, err := cf.load()
			if err != nil {
				return err
			}
			config.RestoreSecrets(&cfg, current)
		} else {
			var err error
			if cfg, err = cf.load(); err != nil {
				return err
			}
			values, err := harness.Preset(cfg.Run.Preset)
			if err != nil {
				return err
			}
			// Load again with the preset as the layer above the defaults.
			if cfg, err = config.Load(config.Sources{File: cf.file, Environ: os.Environ(), Flags: cf.flagValues(), Preset: values}); err != nil {
				return err
			}
		}
		if dir == "" {
			id = cfg.Run.ID
			if id == "" {
				id = time.Now().Format("20060102-150405")
			}
			if err := bus.CheckName("run id", id); err != nil {
				return err
			}
			dir = filepath.Join(cfg.Run.Dir, id)
		}
		if len(cfg.Run.Methods) == 0 {
			return errors.New("no methods: set run.methods or --compare")
		}
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		w := cmd.ErrOrStderr()
		fmt.Fprintf(w, "spa run %s: preset %s, %s, methods %v, in %s\n", id, cfg.Run.Preset, cfg.Env.Name, cfg.Run.Methods, dir)
		began := time.Now()
		rep, err := harness.Run(ctx, harness.Options{Config: cfg, Dir: dir, ID: id, Resume: resume != "", Log: w})
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted (%v); continue with: spa run --resume %s", err, dir)
			}
			return err
		}
		out := cmd.OutOrStdout()
		fmt.Fprintf(out, "\n%s\nreport: %s (%s)\n", rep.Table(), rep.Path, time.Since(began).Round(time.Second))
		return nil
	}
	return cmd
}
