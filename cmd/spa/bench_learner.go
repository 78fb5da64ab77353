package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/torchrt"
)

func newBenchLearnerCmd() *cobra.Command {
	var asJSON bool
	var python, peerEnv, preset, device string
	var steps, loopSteps int
	cmd := &cobra.Command{
		Use:   "learner",
		Short: "SFT and PPO tokens/s of a model preset (tiny by default) beside PyTorch eager, and where a PPO step's time goes",
		Long: `Measure spa's learner on a model preset (tiny by default; random weights and tokens) and the same
computation in PyTorch eager (learner/bench_torch.py), in one run, on the same device (--device cpu,
cuda or cuda:N), with the same thread count:

  - sft batch 8 x 256: loss on the second half of each sequence, AdamW, clipping;
  - ppo update 16 x (192+64): critic scoring, GAE, whitening, one actor update (clipped and
    dual-clipped surrogate, entropy bonus) and one critic update;
  - world-model sft: the quick preset's SFT shape, batches of 16 three-turn conversations of 1,160
    tokens with a 120-token answer per turn, in forward passes of 8;
  - multi-turn ppo: the quick preset's PPO update, 32 three-turn episodes of 880 tokens with
    masked prompts, in forward passes of 8.

Tokens/s count whole sequences. PyTorch runs as its users run it, in your environment (--peer-env
own), and with spa's runtime tuning added (--peer-env spa: the allocator, OpenBLAS kernels and
thread count that spa sets for itself; spa doctor lists them); both by default. The ratio and the
target compare spa with the faster of the two. Then it runs the production PPO loop with an
in-process engine (16 responses of 64 tokens per step) and splits a step's time into generation,
scoring, update, checkpoint and weight sync. Target: every case at >= 0.9x PyTorch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, dev, err := benchModel(preset, device)
			if err != nil {
				return err
			}
			envs, err := peerEnvs(peerEnv)
			if err != nil {
				return err
			}
			info, _ := torchrt.ReadInfo()
			cases := learner.BenchCases(steps)
			var ours []model.BenchResult
			var split learner.StepSplit
			if !asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "measuring spa (gotch)...")
			}
			err = onTorchThread(func() error {
				for _, c := range cases {
					r, err := learner.MeasureCase(cfg, dev, c)
					if err != nil {
						return fmt.Errorf("%s: %w", c.Name, err)
					}
					ours = append(ours, r)
				}
				split, err = learner.MeasurePPOLoop(cmd.Context(), cfg, dev, 16, 32, 64, loopSteps)
				return err
			})
			if err != nil {
				return err
			}
			job := map[string]any{"config": cfg, "threads": info.Threads, "device": device, "cases": cases}
			var progress io.Writer = cmd.ErrOrStderr()
			if asJSON {
				progress = io.Discard
			}
			peers := runPeers(cmd.Context(), progress, python, envs, map[string]string{"bench_torch.py": model.TorchBenchScript, "bench_learner.py": learner.TorchBenchScript}, "bench_learner.py", job)
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"machine": thisMachine(), "libtorch": info.Version, "threads": info.Threads,
					"allocator": info.Allocator, "preset": preset, "device": device, "cases": cases, "spa": ours, "pytorch": peers, "ppo_step": split})
			}
			fmt.Fprintln(out, benchHeader(info, preset, cfg, device))
			names := make([]string, len(cases))
			for i, c := range cases {
				names[i] = c.Name
			}
			if err := printPeerTable(out, names, ours, peers, func(int) bool { return true }); err != nil {
				return err
			}
			total := split.GenerateS + split.ScoreS + split.UpdateS + split.SaveS + split.SyncS
			fmt.Fprintf(out, "\nPPO step, %d responses of %d tokens, mean of %d steps: %.2fs\n", split.Batch, 64, split.Steps, total)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			for _, p := range []struct {
				name string
				s    float64
			}{{"generation", split.GenerateS}, {"scoring", split.ScoreS}, {"update", split.UpdateS}, {"checkpoint", split.SaveS}, {"sync", split.SyncS}} {
				fmt.Fprintf(tw, "  %s\t%.3fs\t%.0f%%\t\n", p.name, p.s, 100*p.s/max(total, 1e-9))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&python, "python", "/usr/bin/python3", "Python with PyTorch for the side-by-side run")
	cmd.Flags().StringVar(&peerEnv, "peer-env", "both", "PyTorch's environment: own (yours), spa (yours plus spa's tuning) or both")
	cmd.Flags().IntVar(&steps, "steps", 8, "timed steps of the small cases (the preset-shaped cases run half as many)")
	cmd.Flags().IntVar(&loopSteps, "loop-steps", 3, "PPO loop steps for the time split")
	cmd.Flags().StringVar(&preset, "preset", "tiny", "model preset: "+strings.Join(model.Presets, ", "))
	cmd.Flags().StringVar(&device, "device", "cpu", "cpu, cuda or cuda:N (PyTorch runs on the same device)")
	return cmd
}
