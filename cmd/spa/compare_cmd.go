package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/harness"
)

func newCompareCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "compare RUN_DIR... [--out summary.md]",
		Short: "Put finished runs side by side: mean ± sd over seeds and each run's paired differences",
		Long: `Read finished spa run directories (usually one preset with run.seed 1, 2, 3) and print, in
Markdown, the mean ± sd over runs of every method's evaluations (Pass@1, Pass@k, greedy Pass@1,
actions per episode, format errors, and how far above chance the first move depends on the
puzzle), and each run's paired differences on the same puzzles with
their 95% intervals, with a count of the runs whose interval lies above 0.

The runs must share the environment, the methods and the validation puzzles (run.val_seed,
run.val_puzzles, run.val_k); other settings may differ, and the summary names the keys that do.
A run that has not finished its evaluations is refused with the command that finishes it.

  for s in 1 2 3; do spa run --preset quick --set run.seed=$s --set run.id=quick-s$s; done
  spa compare runs/quick-s1 runs/quick-s2 runs/quick-s3`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, dirs []string) error {
			md, err := harness.Summarize(dirs)
			if err != nil {
				return err
			}
			if out != "" {
				if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
					return fmt.Errorf("write %s: %w", out, err)
				}
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), md)
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "also write the summary to this file")
	return cmd
}
