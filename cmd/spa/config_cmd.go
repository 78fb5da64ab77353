package main

import (
	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the merged configuration",
	}
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the merged configuration as YAML, each key with its description",
		Long: `Print the configuration that results from defaults < --config YAML < SPA_* environment
variables < flags. Secrets are masked. The output is valid input for --config.

Every key can be set in the environment: rollout.workers is SPA_ROLLOUT_WORKERS.
Lists take comma-separated values there and in flags.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(print)
	print.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		out, err := cfg.YAML()
		if err != nil {
			return err
		}
		_, err = cmd.OutOrStdout().Write(out)
		return err
	}
	cmd.AddCommand(print)
	return cmd
}
