package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
)

func newTrajCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "traj",
		Short: "Work with a run's trajectories on the bus",
	}
	cmd.AddCommand(newTrajExportCmd())
	return cmd
}

func newTrajExportCmd() *cobra.Command {
	var run, out string
	cmd := &cobra.Command{
		Use:   "export --run RUN [--out FILE]",
		Short: "Write a run's trajectories as JSON lines",
		Long: `Write every trajectory of a run, in the order they were stored, one JSON object per line (the
schema is in docs/bus-protocol.md). It reads the stream without a durable consumer, so it never
disturbs a learner that is running.

With --bus it reads from that server; without, from the embedded store of <run-dir>/<run>/nats
that 'spa run' leaves behind.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&run, "run", "", "run id (default run.id)")
	cmd.Flags().StringVarP(&out, "out", "o", "-", "output file; - is standard output")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		rb, err := openRunBusFromFlags(cmd, cf, run, "spa-traj-export")
		if err != nil {
			return err
		}
		defer rb.close()
		ctx, run, b := rb.ctx, rb.run, rb.b

		var w io.Writer = cmd.OutOrStdout()
		var f *os.File
		if out != "-" {
			if f, err = os.Create(out); err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		bw := bufio.NewWriter(w)
		progress := newProgress(cmd.ErrOrStderr(), "export "+run)
		n, err := bus.ExportTrajectories(ctx, b, run, bw, progress.update)
		progress.done()
		if err != nil {
			if f != nil {
				// A partial or empty file would pass for an export; leave none.
				f.Close()
				os.Remove(out)
			}
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if f != nil {
			if err := f.Close(); err != nil {
				return err
			}
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "exported %d trajectories of run %s\n", n, run)
		return nil
	}
	return cmd
}

// progress draws a one-line counter on a terminal-like writer, at most ten times a second.
type progress struct {
	w     io.Writer
	label string
	start time.Time
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, label string) *progress {
	return &progress{w: w, label: label, start: time.Now()}
}

func (p *progress) update(done, total uint64) {
	if time.Since(p.last) < 100*time.Millisecond && done != total {
		return
	}
	p.last = time.Now()
	el := time.Since(p.start).Seconds()
	rate := float64(done) / max(el, 1e-9)
	eta := ""
	if rate > 0 && total > done {
		eta = fmt.Sprintf(" eta %s", time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintf(p.w, "\r%s %d/%d (%.0f%%) %s/s%s   ", p.label, done, total, 100*float64(done)/float64(max(total, 1)), humanRate(rate), eta)
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
