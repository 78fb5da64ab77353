package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show or set a run's current policy version (the spa_policy KV bucket)",
		Long: `A run's current policy version lives in the spa_policy JetStream KV bucket: version, model name,
weight directory and time. Rollout workers watch it and switch versions mid-run; the learner sets
it after each weight sync. 'spa policy set' swaps the policy by hand, e.g. to roll a fleet forward
to a checkpoint trained elsewhere. Versions only move forward.`,
	}
	cmd.AddCommand(newPolicyShowCmd(), newPolicySetCmd())
	return cmd
}

func newPolicyShowCmd() *cobra.Command {
	var run string
	var asJSON, watch bool
	cmd := &cobra.Command{
		Use:   "show --run RUN [--watch]",
		Short: "Print a run's current policy version",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&run, "run", "", "run id (default run.id)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&watch, "watch", false, "keep printing each new version until interrupted")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		rb, pols, err := openRunPolicies(cmd, cf, run)
		if err != nil {
			return err
		}
		defer rb.close()
		ctx, run := rb.ctx, rb.run
		print := func(p bus.Policy) {
			if asJSON {
				_ = json.NewEncoder(cmd.OutOrStdout()).Encode(p)
				return
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run %s: version %d, model %s, weights %s, set %s\n", run, p.Version, p.Model, p.WeightDir, p.UpdatedAt.Format(time.RFC3339))
		}
		if watch {
			updates, err := pols.Watch(ctx, run)
			if err != nil {
				return err
			}
			for p := range updates {
				print(p)
			}
			return nil
		}
		p, err := pols.Get(ctx, run)
		if errors.Is(err, bus.ErrNoPolicy) {
			return &exitError{code: 3, err: err}
		}
		if err != nil {
			return err
		}
		print(p)
		return nil
	}
	return cmd
}

func newPolicySetCmd() *cobra.Command {
	var run, model, weightDir string
	var version int64
	cmd := &cobra.Command{
		Use:   "set --run RUN --version N --model NAME [--weight-dir DIR]",
		Short: "Set a run's current policy version; workers switch to it without restarting",
		Args:  cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&run, "run", "", "run id (default run.id)")
	cmd.Flags().Int64Var(&version, "version", -1, "policy version; must be above the current one")
	cmd.Flags().StringVar(&model, "model", "", "model name the servers answer to for this version")
	cmd.Flags().StringVar(&weightDir, "weight-dir", "", "checkpoint directory of this version")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if version < 0 || model == "" {
			return errors.New("pass --version N (>= 0) and --model NAME")
		}
		rb, pols, err := openRunPolicies(cmd, cf, run)
		if err != nil {
			return err
		}
		defer rb.close()
		ctx, run := rb.ctx, rb.run
		if err := pols.Set(ctx, run, bus.Policy{Version: version, Model: model, WeightDir: weightDir}); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "run %s: policy version %d (%s)\n", run, version, model)
		return nil
	}
	return cmd
}

// openRunPolicies opens the run's bus as the flags say, and its policy KV.
func openRunPolicies(cmd *cobra.Command, cf *configFlags, run string) (*runBus, *bus.Policies, error) {
	rb, err := openRunBusFromFlags(cmd, cf, run, "spa-policy")
	if err != nil {
		return nil, nil, err
	}
	pols, err := bus.OpenPolicies(rb.ctx, rb.b)
	if err != nil {
		rb.close()
		return nil, nil, err
	}
	return rb, pols, nil
}
