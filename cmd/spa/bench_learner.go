package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/torchrt"
)

func newBenchLearnerCmd() *cobra.Command {
	var asJSON bool
	var python string
	var steps, loopSteps int
	cmd := &cobra.Command{
		Use:   "learner",
		Short: "SFT and PPO tokens/s of the tiny model beside PyTorch eager, and where a PPO step's time goes",
		Long: `Measure spa's learner on the tiny preset (random weights and tokens) and the same computation in
PyTorch eager (learner/bench_torch.py), in one run, with the same threads and BLAS settings:

  - sft: batch 8 x 256 tokens, loss on the second half of each sequence, AdamW, clipping;
  - ppo: 16 trajectories of 192 prompt + 64 response tokens: critic scoring, GAE, whitening, one
    actor update (clipped and dual-clipped surrogate, entropy bonus) and one critic update.

Tokens/s count whole sequences. Then it runs the production PPO loop with an in-process engine
(16 responses of 64 tokens per step) and splits a step's time into generation, scoring, update,
checkpoint and weight sync. Target: SFT and PPO at >= 0.9x PyTorch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := model.Preset("tiny", 1024)
			if err != nil {
				return err
			}
			info, _ := torchrt.ReadInfo()
			const sftB, sftT, ppoB, ppoP, ppoR = 8, 256, 16, 192, 64
			var ours []model.BenchResult
			var split learner.StepSplit
			if !asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "measuring spa (gotch)...")
			}
			err = onTorchThread(func() error {
				r, err := learner.MeasureSFT(cfg, sftB, sftT, steps)
				if err != nil {
					return err
				}
				ours = append(ours, r)
				if r, err = learner.MeasurePPO(cfg, ppoB, ppoP, ppoR, steps); err != nil {
					return err
				}
				ours = append(ours, r)
				split, err = learner.MeasurePPOLoop(cmd.Context(), cfg, ppoB, 32, ppoR, loopSteps)
				return err
			})
			if err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "measuring PyTorch eager...")
			}
			var theirs struct {
				Torch   string              `json:"torch"`
				Results []model.BenchResult `json:"results"`
			}
			job := map[string]any{"config": cfg, "threads": info.Threads, "sft": []int{sftB, sftT, steps}, "ppo": []int{ppoB, ppoP, ppoR, steps}}
			torchErr := runPython(cmd.Context(), python, map[string]string{"bench_torch.py": model.TorchBenchScript, "bench_learner.py": learner.TorchBenchScript}, "bench_learner.py", job, &theirs)
			out := cmd.OutOrStdout()
			if asJSON {
				rec := map[string]any{"machine": thisMachine(), "libtorch": info.Version, "threads": info.Threads, "spa": ours, "pytorch": theirs.Results, "pytorch_version": theirs.Torch, "ppo_step": split}
				if torchErr != nil {
					rec["pytorch_error"] = torchErr.Error()
				}
				return json.NewEncoder(out).Encode(rec)
			}
			m := thisMachine()
			fmt.Fprintf(out, "%s, %d cores, libtorch %s, %d threads, %s; tiny preset (hidden 128, 4 layers, vocab 1024)\n", m.CPU, m.Cores, info.Version, info.Threads, info.BLASCore)
			if torchErr != nil {
				fmt.Fprintf(out, "PyTorch side unavailable: %v\n", torchErr)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEASUREMENT\tSPA tok/s\tPYTORCH tok/s\tRATIO\tTARGET\t")
			names := []string{fmt.Sprintf("sft batch %d x %d", sftB, sftT), fmt.Sprintf("ppo update %d x (%d+%d)", ppoB, ppoP, ppoR)}
			for i, r := range ours {
				theirsRate, ratio, target := "-", "-", ">= 0.90x"
				if i < len(theirs.Results) {
					theirsRate = humanRate(theirs.Results[i].TokensPerSec)
					x := r.TokensPerSec / theirs.Results[i].TokensPerSec
					ratio = fmt.Sprintf("%.2fx", x)
					target += " " + verdict(x >= 0.9)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", names[i], humanRate(r.TokensPerSec), theirsRate, ratio, target)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			total := split.GenerateS + split.ScoreS + split.UpdateS + split.SaveS + split.SyncS
			fmt.Fprintf(out, "\nPPO step, %d responses of %d tokens, mean of %d steps: %.2fs\n", split.Batch, ppoR, split.Steps, total)
			tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
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
	cmd.Flags().IntVar(&steps, "steps", 8, "timed SFT and PPO update steps")
	cmd.Flags().IntVar(&loopSteps, "loop-steps", 3, "PPO loop steps for the time split")
	return cmd
}
