package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/internal/progress"
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
		count := newCounter(cmd.ErrOrStderr(), "export "+run)
		n, err := bus.ExportTrajectories(ctx, b, run, bw, count.update)
		count.done()
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

// counter is a progress line for counted work whose total is known once it starts, with its rate.
type counter struct {
	w     io.Writer
	label string
	start time.Time
	line  *progress.Line
}

func newCounter(w io.Writer, label string) *counter {
	return &counter{w: w, label: label, start: time.Now()}
}

func (c *counter) update(done, total uint64) {
	if c.line == nil {
		c.line = progress.New(c.w, c.label, int(total))
	}
	rate := float64(done) / max(time.Since(c.start).Seconds(), 1e-9)
	c.line.Set(int(done), humanRate(rate)+"/s")
}

func (c *counter) done() { c.line.Done() }
