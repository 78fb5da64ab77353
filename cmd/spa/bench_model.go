package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/torchrt"
)

func newBenchModelCmd() *cobra.Command {
	var asJSON bool
	var python string
	var steps, newTokens int
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Training and generation tokens/s of the tiny model, beside PyTorch eager",
		Long: `Measure the tiny preset (random weights, random tokens) in spa's gotch model and the same
architecture in PyTorch eager, in the same run, with the same threads and BLAS settings:

  - train: batch 8 x 256 tokens, forward, cross-entropy, backward, AdamW step;
  - generate: greedy decoding with a KV cache after a 32-token prompt, batch 1 and batch 64.

The PyTorch side runs model/bench_torch.py with --python (Debian's python3-torch uses the same
libtorch 1.13); without PyTorch the table says so and shows spa alone. Target: training at
>= 0.9x PyTorch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := model.Preset("tiny", 1024)
			if err != nil {
				return err
			}
			info, _ := torchrt.ReadInfo()
			gens := [][3]int{{1, 32, newTokens}, {64, 32, newTokens}}
			var ours []model.BenchResult
			if !asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "measuring spa (gotch)...")
			}
			err = onTorchThread(func() error {
				r, err := model.MeasureTraining(cfg, 8, 256, steps)
				if err != nil {
					return err
				}
				ours = append(ours, r)
				for _, g := range gens {
					r, err := model.MeasureGeneration(cfg, g[0], g[1], g[2])
					if err != nil {
						return err
					}
					ours = append(ours, r)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "measuring PyTorch eager...")
			}
			theirs, torchVersion, torchErr := runTorchBench(cmd.Context(), python, cfg, info.Threads, steps, gens)
			out := cmd.OutOrStdout()
			if asJSON {
				rec := map[string]any{"machine": thisMachine(), "libtorch": info.Version, "threads": info.Threads, "spa": ours, "pytorch": theirs, "pytorch_version": torchVersion}
				if torchErr != nil {
					rec["pytorch_error"] = torchErr.Error()
				}
				return json.NewEncoder(out).Encode(rec)
			}
			m := thisMachine()
			fmt.Fprintf(out, "%s, %d cores, libtorch %s, %d threads, %s; tiny preset (%s)\n", m.CPU, m.Cores, info.Version, info.Threads, info.BLASCore, "hidden 128, 4 layers, vocab 1024")
			if torchErr != nil {
				fmt.Fprintf(out, "PyTorch side unavailable: %v\n", torchErr)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEASUREMENT\tSPA tok/s\tPYTORCH tok/s\tRATIO\tTARGET\t")
			for i, r := range ours {
				name := fmt.Sprintf("train batch %d x 256", r.Batch)
				target := ">= 0.90x"
				if r.What == "generate" {
					name, target = fmt.Sprintf("generate batch %d (KV cache)", r.Batch), "-"
				}
				theirsRate, ratio := "-", "-"
				if i < len(theirs) {
					theirsRate = humanRate(theirs[i].TokensPerSec)
					x := r.TokensPerSec / theirs[i].TokensPerSec
					ratio = fmt.Sprintf("%.2fx", x)
					if r.What == "train" {
						target += " " + verdict(x >= 0.9)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", name, humanRate(r.TokensPerSec), theirsRate, ratio, target)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&python, "python", "/usr/bin/python3", "Python with PyTorch for the side-by-side run")
	cmd.Flags().IntVar(&steps, "steps", 12, "timed training steps")
	cmd.Flags().IntVar(&newTokens, "new-tokens", 64, "decoding steps per generation measurement")
	return cmd
}

// runTorchBench runs the PyTorch eager twin of the measurement and returns its results in the
// same order as spa's.
func runTorchBench(ctx context.Context, python string, cfg model.Config, threads, steps int, gens [][3]int) ([]model.BenchResult, string, error) {
	job := map[string]any{"config": cfg, "threads": threads, "train": []int{8, 256, steps}, "generate": gens}
	var res struct {
		Torch   string              `json:"torch"`
		Results []model.BenchResult `json:"results"`
	}
	err := runPython(ctx, python, map[string]string{"bench_torch.py": model.TorchBenchScript}, "bench_torch.py", job, &res)
	return res.Results, res.Torch, err
}

// runPython writes scripts into a temporary directory, runs main with the JSON job as its
// argument, and decodes its one line of JSON output into out.
func runPython(ctx context.Context, python string, scripts map[string]string, main string, job, out any) error {
	if _, err := exec.LookPath(python); err != nil {
		return fmt.Errorf("%s not found", python)
	}
	dir, err := os.MkdirTemp("", "spa-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for name, text := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	data, _ := json.Marshal(job)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, python, filepath.Join(dir, main), string(data))
	// The environment is this process's, after torchrt's re-exec: the same OMP_NUM_THREADS and
	// OPENBLAS_CORETYPE, so both sides use the same kernels and threads.
	c.Env = os.Environ()
	outBytes, err := c.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
			return fmt.Errorf("%s: %s (install Debian's python3-torch for the comparison)", python, lastLine(string(ee.Stderr)))
		}
		return fmt.Errorf("%s: %w", python, err)
	}
	if err := json.Unmarshal(outBytes, out); err != nil {
		return fmt.Errorf("PyTorch bench output: %w", err)
	}
	return nil
}

func lastLine(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}
