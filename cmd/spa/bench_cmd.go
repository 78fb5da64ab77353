package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/envs"
)

func newBenchCmd() *cobra.Command {
	var profile string
	var profileFile *os.File
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure spa's components on this machine",
		// --cpuprofile answers "where does the time go" for any benchmark. Go's profiler sees
		// libtorch's time as cgo calls, which is enough to split work in the model from the
		// server, bus or loop around it.
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if profile == "" {
				return nil
			}
			f, err := os.Create(profile)
			if err != nil {
				return fmt.Errorf("--cpuprofile: %w", err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return fmt.Errorf("--cpuprofile: %w", err)
			}
			profileFile = f
			return nil
		},
		PersistentPostRunE: func(cmd *cobra.Command, _ []string) error {
			if profileFile == nil {
				return nil
			}
			pprof.StopCPUProfile()
			if err := profileFile.Close(); err != nil {
				return fmt.Errorf("--cpuprofile: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "CPU profile: %s (go tool pprof -top %s)\n", profile, profile)
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&profile, "cpuprofile", "", "write a Go CPU profile of the benchmark to FILE (time in libtorch shows as cgo calls)")
	cmd.AddCommand(newBenchEnvsCmd(), newBenchBusCmd(), newBenchModelCmd(), newBenchServeCmd(), newBenchRolloutCmd(), newBenchLearnerCmd(), newBenchSoakCmd())
	return cmd
}

// machine describes where a benchmark ran, for the JSON record.
type machine struct {
	CPU   string `json:"cpu"`
	Cores int    `json:"cores"`
	Go    string `json:"go"`
	OS    string `json:"os"`
}

func thisMachine() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func newBenchEnvsCmd() *cobra.Command {
	var asJSON bool
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "envs",
		Short: "Resets/s and steps/s of every environment variant",
		Long: `Measure every registered environment variant on one goroutine: resets per second (each with a
new seed, so level generation is included) and steps per second (random well-formed actions, timed
without the resets between episodes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var results []envs.BenchResult
			for _, info := range envs.List() {
				for _, v := range info.Variants {
					if !asJSON {
						fmt.Fprintf(cmd.ErrOrStderr(), "measuring %s %s...\n", info.Name, v.Name)
					}
					r, err := envs.Measure(info.Name, v.Name, duration)
					if err != nil {
						return err
					}
					results = append(results, r)
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"machine": thisMachine(), "duration": duration.String(), "results": results})
			}
			m := thisMachine()
			fmt.Fprintf(out, "%s, %d cores, %s, one goroutine\n", m.CPU, m.Cores, m.Go)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "env\tvariant\tresets/s\tsteps/s\t")
			for _, r := range results {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", r.Env, r.Variant, humanRate(r.ResetsPerSec), humanRate(r.StepsPerSec))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().DurationVar(&duration, "duration", time.Second, "time per measurement")
	return cmd
}

func humanRate(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}
