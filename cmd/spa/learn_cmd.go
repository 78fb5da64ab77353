package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/harness"
	metricslog "github.com/spa-rl/spa/internal/metrics"
	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/weightsync"
)

func newLearnCmd() *cobra.Command {
	var stage, modelDir, out, data, valData, run, adminKey, prefix string
	var syncs []string
	var valShare float64
	var resume bool
	var maxSteps int
	cmd := &cobra.Command{
		Use:   "learn --stage sft|ppo --model DIR ...",
		Short: "Train: world-model SFT on JSON-lines data, or PPO on the bus's trajectories",
		Long: `--stage sft fine-tunes --model on --data (JSON lines of {"messages": [...]}, as 'spa run'
writes to runs/<id>/sft.jsonl): cross-entropy on the assistant turns only, AdamW with warmup and
cosine decay, gradient clipping, learner.sft.epochs epochs, validation loss after each epoch on
--val (or a --val-share of the data), and a checkpoint after every epoch.

--stage ppo trains --model on the trajectories of --run from --bus: learner.ppo.steps steps of
rollout.groups x rollout.group_size trajectories, dropping those sampled by a policy
learner.max_off_policy_steps or more versions old. After each step it writes a checkpoint and, with
--sync, loads it into every server (spa, vllm-lora, vllm-reload or sglang; repeat the flag), then
points the run's policy KV at the new version, which is what rollout workers follow.

Checkpoints are Hugging Face directories (servable by 'spa serve' and vLLM; with learner.lora.rank
> 0 also a PEFT adapter in adapter/) with trainer_state.json and the optimiser moments, under --out;
--resume continues from the newest one exactly. Ctrl-C saves a checkpoint and stops (SFT) or stops
between steps (PPO). Settings come from learner.* (see 'spa config print').`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&stage, "stage", "", "sft or ppo")
	fs.StringVar(&modelDir, "model", "", "initial checkpoint directory (Hugging Face format)")
	fs.StringVar(&out, "out", "", "checkpoint directory (default <run.dir>/<run id>/<stage>)")
	fs.BoolVar(&resume, "resume", false, "continue from the newest checkpoint in --out")
	fs.StringVar(&data, "data", "", "sft: training data, JSON lines of {\"messages\": [...]}")
	fs.StringVar(&valData, "val", "", "sft: validation data (default: --val-share of --data)")
	fs.Float64Var(&valShare, "val-share", 0.05, "sft: share of --data held out for validation when --val is not given")
	fs.IntVar(&maxSteps, "max-steps", 0, "sft: stop after this many optimiser steps (0: every epoch)")
	fs.StringVar(&run, "run", "", "ppo: run id whose trajectories to train on (default run.id)")
	fs.StringArrayVar(&syncs, "sync", nil, "ppo: BACKEND=URL of a server to load each version into (spa, vllm-lora, vllm-reload, sglang)")
	fs.StringVar(&adminKey, "admin-key", "", "ppo: bearer token for the servers' weight endpoints (default server.admin_key)")
	fs.StringVar(&prefix, "model-prefix", "spa", "ppo: versions are served as <prefix>-v<N>")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if modelDir == "" {
			return errors.New("pass --model DIR (the checkpoint to start from)")
		}
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		switch stage {
		case "sft":
			if data == "" {
				return errors.New("--stage sft needs --data FILE (JSON lines of {\"messages\": [...]})")
			}
			if out == "" {
				out = filepath.Join(cfg.Run.Dir, orDefault(cfg.Run.ID, "learn"), "sft")
			}
			return learnSFT(ctx, cmd, cfg, modelDir, out, data, valData, valShare, maxSteps, resume)
		case "ppo":
			if run == "" {
				run = cfg.Run.ID
			}
			if err := bus.CheckName("run", run); err != nil {
				return fmt.Errorf("%w (pass --run RUN)", err)
			}
			if cfg.Bus.URL == "" {
				return errors.New("--stage ppo reads trajectories from a bus: pass --bus nats://HOST:PORT")
			}
			if out == "" {
				out = filepath.Join(cfg.Run.Dir, run, "ppo")
			}
			if adminKey == "" {
				adminKey = cfg.Server.AdminKey
			}
			var servers []weightsync.Syncer
			for _, s := range syncs {
				sy, err := weightsync.ParseSyncer(s, adminKey)
				if err != nil {
					return err
				}
				servers = append(servers, sy)
			}
			return learnPPO(ctx, cmd, cfg, modelDir, out, run, prefix, servers, resume)
		}
		return fmt.Errorf("--stage %q: want sft or ppo", stage)
	}
	return cmd
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func learnSFT(ctx context.Context, cmd *cobra.Command, cfg config.Config, modelDir, out, data, valData string, valShare float64, maxSteps int, resume bool) error {
	tokens, err := loadTokens(modelDir)
	if err != nil {
		return err
	}
	exs, err := learner.ReadSFTExamples(data)
	if err != nil {
		return err
	}
	seqs, dropped, err := learner.SFTSequences(tokens, exs, cfg.Learner.SFT.MaxLength, cfg.Learner.SFT.MaskState)
	if err != nil {
		return err
	}
	var val []learner.Sequence
	if valData != "" {
		vex, err := learner.ReadSFTExamples(valData)
		if err != nil {
			return err
		}
		if val, _, err = learner.SFTSequences(tokens, vex, cfg.Learner.SFT.MaxLength, cfg.Learner.SFT.MaskState); err != nil {
			return err
		}
	} else {
		seqs, val = learner.SplitValidation(seqs, valShare)
	}
	w := cmd.ErrOrStderr()
	fmt.Fprintf(w, "sft: %d training and %d validation sequences from %s", len(seqs), len(val), data)
	if dropped > 0 {
		fmt.Fprintf(w, " (%d longer than learner.sft.max_length %d dropped)", dropped, cfg.Learner.SFT.MaxLength)
	}
	fmt.Fprintln(w)
	metrics, err := metricslog.Open(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		return err
	}
	defer metrics.Close()
	po, err := harness.PolicyOptions(cfg.Learner, uint64(cfg.Run.Seed))
	if err != nil {
		return err
	}
	o := harness.SFTOptions(cfg.Learner, uint64(cfg.Run.Seed))
	o.Checkpoints = &learner.Checkpointer{Dir: out, TokenizerDir: modelDir, DType: cfg.Learner.SaveDType, Keep: cfg.Learner.KeepCheckpoints}
	o.Resume, o.StopAfter = resume, maxSteps
	res, err := harness.RunSFT(ctx, harness.SFTStage{Name: "sft", From: modelDir, Train: seqs, Val: val, Policy: po, Options: o, StageIO: harness.StageIO{Metrics: metrics, Log: w}})
	if err != nil {
		if errors.Is(err, context.Canceled) && res.Checkpoint != "" {
			return fmt.Errorf("interrupted; saved %s (continue with --resume)", res.Checkpoint)
		}
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "sft: %d steps, train loss %.4f, val loss %s, %.0f tokens/s; checkpoint %s\n", res.Steps, res.TrainLoss, harness.LossText(res.ValLoss), res.TokensPerSec, res.Checkpoint)
	return nil
}

func learnPPO(ctx context.Context, cmd *cobra.Command, cfg config.Config, modelDir, out, run, prefix string, servers []weightsync.Syncer, resume bool) error {
	mcfg, err := model.LoadConfig(modelDir)
	if err != nil {
		return err
	}
	if err := weightsync.CheckTargets(servers, mcfg.TieWordEmbeddings); err != nil {
		return err
	}
	b, err := bus.Open(ctx, busOptions(cfg.Bus, "spa-learn"))
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := bus.EnsureTrajStream(ctx, b.JS, bus.StreamOptions{}); err != nil {
		return err
	}
	cons, err := bus.NewConsumer(ctx, b, run, bus.ConsumerOptions{AckWait: cfg.Learner.AckWait})
	if err != nil {
		return err
	}
	pols, err := bus.OpenPolicies(ctx, b)
	if err != nil {
		return err
	}
	start := int64(0)
	if p, err := pols.Get(ctx, run); err == nil {
		start = p.Version
	}
	var fleet *weightsync.Fleet
	if len(servers) > 0 {
		fleet = &weightsync.Fleet{Servers: servers, Policies: pols, Run: run, Patience: cfg.Learner.SyncPatience,
			Logf: func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), "spa learn: "+format+"\n", args...) }}
	}
	metrics, err := metricslog.Open(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		return err
	}
	defer metrics.Close()
	w := cmd.ErrOrStderr()
	steps := cfg.Learner.PPO.Steps
	batch := cfg.Rollout.Groups * cfg.Rollout.GroupSize
	fmt.Fprintf(w, "ppo: run %s, %d steps of %d trajectories, from version %d; checkpoints in %s\n", run, steps, batch, start, out)
	st, err := harness.RunPPO(ctx, harness.PPOStage{
		Name: "ppo",
		New: func() (*learner.PPO, func(), error) {
			return harness.NewPPO(modelDir, cfg.Learner, cfg.Rollout, uint64(cfg.Run.Seed))
		},
		Source: &learner.BusSource{C: cons, Log: func(format string, args ...any) { fmt.Fprintf(w, "\nppo: "+format+"\n", args...) }},
		Run: learner.RunOptions{
			Steps: steps, BatchSize: batch, MaxOffPolicySteps: cfg.Learner.MaxOffPolicySteps,
			Checkpoints:  &learner.Checkpointer{Dir: out, TokenizerDir: modelDir, DType: cfg.Learner.SaveDType, Keep: cfg.Learner.KeepCheckpoints},
			Fleet:        fleet,
			ModelName:    weightsync.ModelNamer(prefix, servers),
			StartVersion: start, Seed: uint64(cfg.Run.Seed), Resume: resume,
		},
		StageIO: harness.StageIO{Metrics: metrics, Log: w},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "ppo: %d steps, version %d; trained on %d trajectories (%d filtered, %d stale, %d invalid)\n",
		st.Step, st.Version, st.Totals.Trained, st.Totals.Filtered, st.Totals.Stale, st.Totals.Invalid)
	return nil
}
