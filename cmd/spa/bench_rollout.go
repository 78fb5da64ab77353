package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/busenv"
	"github.com/spa-rl/spa/model/domain"
	"github.com/spa-rl/spa/rollout"
)

func newBenchRolloutCmd() *cobra.Command {
	var asJSON bool
	var duration time.Duration
	var workers int
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Turns/s and episodes/s of the rollout harness with an instant model",
		Long: `Run rollout workers with an instant in-process model (every turn answers at once with the same
world-model response, token ids included), so the measurement is the harness itself: prompts,
tokenization, parsing, environments and trajectories. Once with local Sokoban 6x6 environments,
once with the same environment served over an embedded bus. Target: >= 20,000 turns/s with local
environments on 2 cores, so the harness never limits a vLLM fleet.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := os.MkdirTemp("", "spa-bench-rollout-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if _, _, _, err := domain.Write(dir, domain.Options{VocabSize: 1024, Seeds: 20}); err != nil {
				return err
			}
			tokens, err := loadTokens(dir)
			if err != nil {
				return err
			}
			if workers <= 0 {
				workers = 2 * runtime.NumCPU()
			}
			local, err := rollout.MeasureHarness(func() (envs.Env, error) { return envs.New("sokoban", "6x6-1box") }, tokens, workers, duration)
			if err != nil {
				return err
			}
			b, err := bus.Open(cmd.Context(), bus.Options{StoreDir: dir + "/nats"})
			if err != nil {
				return err
			}
			defer b.Close()
			host, err := busenv.NewHost(b.Conn, busenv.HostOptions{Env: "sokoban", New: func(v string) (envs.Env, error) { return envs.New("sokoban", v) }})
			if err != nil {
				return err
			}
			defer host.Close()
			remote, err := rollout.MeasureHarness(func() (envs.Env, error) {
				return busenv.Dial(context.Background(), b.Conn, "sokoban", busenv.RemoteOptions{Variant: "6x6-1box"})
			}, tokens, 4*workers, duration)
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd, map[string]any{"machine": thisMachine(), "local": local, "bus": remote, "target_turns_per_sec": 20000})
			}
			m := thisMachine()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s, %d cores; Sokoban 6x6, world-model prompts, instant model\n", m.CPU, m.Cores)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ENVIRONMENTS\tWORKERS\tTURNS/S\tEPISODES/S\tTARGET\t")
			fmt.Fprintf(tw, "local\t%d\t%s\t%s\t>= 20.0k turns/s %s\t\n", local.Workers, humanRate(local.TurnsPerSec), humanRate(local.EpisodesSec), verdict(local.TurnsPerSec >= 20000))
			fmt.Fprintf(tw, "over the bus (embedded NATS)\t%d\t%s\t%s\t-\t\n", remote.Workers, humanRate(remote.TurnsPerSec), humanRate(remote.EpisodesSec))
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().DurationVar(&duration, "duration", 3*time.Second, "time per measurement")
	cmd.Flags().IntVar(&workers, "workers", 0, "concurrent episodes (default 2 per core; 4x that over the bus)")
	return cmd
}
