package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"

	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/torchrt"
)

func newBenchModelCmd() *cobra.Command {
	var asJSON bool
	var python, peerEnv, preset, device string
	var steps, newTokens int
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Training and generation tokens/s of a model preset (tiny by default), beside PyTorch eager",
		Long: `Measure a model preset (tiny by default; random weights, random tokens) in spa's gotch model and
the same architecture in PyTorch eager, in the same run, on the same device (--device cpu, cuda or
cuda:N), with the same thread count:

  - train: batch 8 x 256 tokens, forward, cross-entropy, backward, AdamW step;
  - generate: greedy decoding with a KV cache after a 32-token prompt, batch 1 and batch 64.

The PyTorch side runs model/bench_torch.py with --python (Debian's python3-torch uses the same
libtorch 1.13); without PyTorch the table says so and shows spa alone. PyTorch runs in your
environment (--peer-env own) and with spa's runtime tuning added (--peer-env spa); both by
default, and the ratio compares spa with the faster. On a GPU both sides wait for the device
before reading the clock. Target: training at >= 0.9x PyTorch.`,
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
			gens := [][3]int{{1, 32, newTokens}, {64, 32, newTokens}}
			var ours []model.BenchResult
			if !asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "measuring spa (gotch)...")
			}
			err = onTorchThread(func() error {
				r, err := model.MeasureTraining(cfg, dev, 8, 256, steps)
				if err != nil {
					return err
				}
				ours = append(ours, r)
				for _, g := range gens {
					r, err := model.MeasureGeneration(cfg, dev, g[0], g[1], g[2])
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
			job := map[string]any{"config": cfg, "threads": info.Threads, "device": device, "train": []int{8, 256, steps}, "generate": gens}
			var progress io.Writer = cmd.ErrOrStderr()
			if asJSON {
				progress = io.Discard
			}
			peers := runPeers(cmd.Context(), progress, python, envs, map[string]string{"bench_torch.py": model.TorchBenchScript}, "bench_torch.py", job)
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"machine": thisMachine(), "libtorch": info.Version, "threads": info.Threads, "allocator": info.Allocator,
					"preset": preset, "device": device, "spa": ours, "pytorch": peers})
			}
			fmt.Fprintln(out, benchHeader(info, preset, cfg, device))
			names := make([]string, len(ours))
			for i, r := range ours {
				names[i] = fmt.Sprintf("train batch %d x 256", r.Batch)
				if r.What == "generate" {
					names[i] = fmt.Sprintf("generate batch %d (KV cache)", r.Batch)
				}
			}
			return printPeerTable(out, names, ours, peers, func(i int) bool { return ours[i].What == "train" })
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&python, "python", "/usr/bin/python3", "Python with PyTorch for the side-by-side run")
	cmd.Flags().StringVar(&peerEnv, "peer-env", "both", "PyTorch's environment: own (yours), spa (yours plus spa's tuning) or both")
	cmd.Flags().IntVar(&steps, "steps", 12, "timed training steps")
	cmd.Flags().StringVar(&preset, "preset", "tiny", "model preset: "+strings.Join(model.Presets, ", "))
	cmd.Flags().StringVar(&device, "device", "cpu", "cpu, cuda or cuda:N (PyTorch runs on the same device)")
	cmd.Flags().IntVar(&newTokens, "new-tokens", 64, "decoding steps per generation measurement")
	return cmd
}

// benchModel is the configuration of a model preset (random weights; the tiny ones with a
// 1,024-token vocabulary) and the device to measure it on.
func benchModel(preset, device string) (model.Config, gotch.Device, error) {
	cfg, err := model.Preset(preset, 1024)
	if err != nil {
		return model.Config{}, gotch.Device{}, err
	}
	dev, err := model.ParseDevice(device)
	if err != nil {
		return model.Config{}, gotch.Device{}, fmt.Errorf("--device: %w", err)
	}
	return cfg, dev, nil
}

// benchHeader is the first line of a model or learner benchmark's table: the machine, the
// runtime and what is measured where.
func benchHeader(info torchrt.Info, preset string, cfg model.Config, device string) string {
	m := thisMachine()
	blas := info.BLASCore // OpenBLAS's kernel set; MKL has none to name
	if info.MKL {
		blas = "MKL"
	}
	return fmt.Sprintf("%s, %d cores, libtorch %s, %d threads, %s, %s; %s preset (hidden %d, %d layers, vocab %d, %.1fM parameters) on %s",
		m.CPU, m.Cores, info.Version, info.Threads, blas, info.Allocator, preset, cfg.HiddenSize, cfg.NumHiddenLayers, cfg.VocabSize, float64(cfg.NumParams())/1e6, device)
}

// peerEnv is one environment a PyTorch peer runs in.
type peerEnv struct {
	name, label string
	extra       []string // added to this process's environment (the user's, see torchrt.Tuned)
}

// peerEnvs parses --peer-env. "own" runs PyTorch as its users run it: in the environment spa was
// started with, without spa's tuning (the allocator spa preloads would otherwise speed up or slow
// down the peer and hide the difference). "spa" adds spa's tuning, to show what it is worth to
// PyTorch too.
func peerEnvs(which string) ([]peerEnv, error) {
	own := peerEnv{name: "own", label: "own env"}
	tuned := peerEnv{name: "spa", label: "spa's env", extra: torchrt.Tuned()}
	switch which {
	case "own":
		return []peerEnv{own}, nil
	case "spa":
		return []peerEnv{tuned}, nil
	case "both":
		return []peerEnv{own, tuned}, nil
	}
	return nil, fmt.Errorf("--peer-env %q: want own, spa or both", which)
}

// peerRun is one PyTorch run's results, in the order of spa's.
type peerRun struct {
	Env     string              `json:"env"`
	Label   string              `json:"-"`
	Torch   string              `json:"torch,omitempty"`
	Results []model.BenchResult `json:"results,omitempty"`
	Error   string              `json:"error,omitempty"`
	err     error
}

// runPeers runs the PyTorch twin once in each environment, saying so on progress.
func runPeers(ctx context.Context, progress io.Writer, python string, envs []peerEnv, scripts map[string]string, main string, job any) []peerRun {
	peers := make([]peerRun, len(envs))
	for i, env := range envs {
		fmt.Fprintf(progress, "measuring PyTorch eager (%s)...\n", env.label)
		var theirs struct {
			Torch   string              `json:"torch"`
			Results []model.BenchResult `json:"results"`
		}
		err := runPython(ctx, python, env.extra, scripts, main, job, &theirs)
		peers[i] = peerRun{Env: env.name, Label: env.label, Torch: theirs.Torch, Results: theirs.Results, err: err}
		if err != nil {
			peers[i].Error = err.Error()
		}
	}
	return peers
}

// printPeerTable prints spa's results beside each peer's, with spa's ratio to the fastest peer and,
// where targeted[i], the 0.9x target.
func printPeerTable(out io.Writer, names []string, ours []model.BenchResult, peers []peerRun, targeted func(i int) bool) error {
	for _, p := range peers {
		if p.err != nil {
			fmt.Fprintf(out, "PyTorch (%s) unavailable: %v\n", p.Label, p.err)
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	head := "MEASUREMENT\tSPA tok/s\t"
	for _, p := range peers {
		head += "PYTORCH (" + strings.ToUpper(p.Label) + ")\t"
	}
	fmt.Fprintln(tw, head+"RATIO TO FASTEST\tTARGET\t")
	for i, r := range ours {
		row := names[i] + "\t" + humanRate(r.TokensPerSec) + "\t"
		best := 0.0
		for _, p := range peers {
			if i < len(p.Results) {
				row += humanRate(p.Results[i].TokensPerSec) + "\t"
				best = max(best, p.Results[i].TokensPerSec)
			} else {
				row += "-\t"
			}
		}
		ratio, target := "-", "-"
		if targeted(i) {
			target = ">= 0.90x"
		}
		if best > 0 {
			x := r.TokensPerSec / best
			ratio = fmt.Sprintf("%.2fx", x)
			if targeted(i) {
				target += " " + verdict(x >= 0.9)
			}
		}
		fmt.Fprintf(tw, "%s%s\t%s\t\n", row, ratio, target)
	}
	return tw.Flush()
}

// runPython writes scripts into a temporary directory, runs main with the JSON job as its
// argument in this process's environment plus extra, and decodes its one line of JSON output into
// out.
func runPython(ctx context.Context, python string, extra []string, scripts map[string]string, main string, job, out any) error {
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
	// torchrt.Reexec took spa's tuning back out of this process's environment, so this is the
	// user's environment unless extra adds the tuning.
	c.Env = append(os.Environ(), extra...)
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
