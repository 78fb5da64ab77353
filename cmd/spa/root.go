package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/torchrt"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func execute(args []string, stdout, stderr io.Writer) int {
	return executeContext(context.Background(), args, stdout, stderr)
}

// executeContext runs the CLI; long-running commands (spa bus, spa env serve) stop when ctx ends,
// as they do on SIGINT.
func executeContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "spa:", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "spa",
		Short: "Train LLM agents with SPA: self-play world-model fine-tuning, then PPO",
		Long: `spa trains LLM agents with the SPA recipe (arXiv 2510.15047): rollout agents play
multi-turn environments against an OpenAI-compatible endpoint, trajectories travel over NATS,
and a libtorch learner runs world-model SFT and PPO and hot-reloads weights into the servers.

Configuration is layered: defaults < --config YAML < SPA_* environment variables < flags.
'spa config print' shows the merged result with every key documented.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newVersionCmd(), newConfigCmd(), newDoctorCmd(), newEnvCmd(), newBenchCmd(),
		newBusCmd(), newTrajCmd(), newPolicyCmd(), newTokenizeCmd(), newModelCmd(), newServeCmd(), newEvalCmd(), newRolloutCmd(), newLearnCmd(), newRunCmd(), newCompareCmd())
	return root
}

// configFlags are the flags every config-reading command takes: --config, --set, and named flags
// for the most common keys.
type configFlags struct {
	file string
	sets []string
	cmd  *cobra.Command
	// own are a command's flags for keys that only it uses (spa serve --api-key).
	own []struct{ flag, key, usage string }
}

// keyFlag adds a flag for a configuration key that this command alone takes.
func (cf *configFlags) keyFlag(flag, key, usage string) {
	cf.own = append(cf.own, struct{ flag, key, usage string }{flag, key, usage})
	cf.cmd.Flags().String(flag, "", usage+" ("+key+")")
}

// commonFlags maps flag names to configuration keys.
var commonFlags = []struct{ flag, key, usage string }{
	{"run-dir", "run.dir", "directory that holds run directories"},
	{"run-id", "run.id", "run id"},
	{"seed", "run.seed", "seed for the training puzzles, sampling and initialisation"},
	{"threads", "run.threads", "libtorch intra-op threads (0: every core)"},
	{"bus", "bus.url", "NATS URL (empty: embedded server)"},
	{"endpoint", "rollout.endpoints", "OpenAI-compatible base URL(s), comma-separated"},
	{"workers", "rollout.workers", "concurrent episodes"},
	{"env", "env.name", "environment"},
	{"variant", "env.variant", "environment variant"},
}

func addConfigFlags(cmd *cobra.Command) *configFlags {
	cf := &configFlags{cmd: cmd}
	fs := cmd.Flags()
	fs.StringVar(&cf.file, "config", "", "YAML config file")
	fs.StringArrayVar(&cf.sets, "set", nil, "set any key, e.g. --set learner.ppo.actor_lr=1e-6 (repeatable)")
	for _, f := range commonFlags {
		fs.String(f.flag, "", f.usage+" ("+f.key+")")
	}
	return cf
}

// load merges the configuration for the command that owns cf.
func (cf *configFlags) load() (config.Config, error) {
	flags, err := cf.values()
	if err != nil {
		return config.Config{}, err
	}
	cfg, err := config.Load(config.Sources{File: cf.file, Environ: os.Environ(), Flags: flags})
	if err == nil {
		// run.threads (--threads) bounds libtorch's intra-op threads for this command; 0 keeps
		// every core (OMP_NUM_THREADS, which spa sets when the user did not).
		torchrt.SetThreads(cfg.Run.Threads)
	}
	return cfg, err
}

// flagValues is values without the error (load has reported it already).
func (cf *configFlags) flagValues() map[string]string {
	v, _ := cf.values()
	return v
}

// values maps the command line's keys to values: named flags, then --set.
func (cf *configFlags) values() (map[string]string, error) {
	flags := map[string]string{}
	for _, f := range append(commonFlags[:len(commonFlags):len(commonFlags)], cf.own...) {
		if fl := cf.cmd.Flags().Lookup(f.flag); fl != nil && fl.Changed {
			flags[f.key] = fl.Value.String()
		}
	}
	// --set comes last so that it wins over a named flag for the same key.
	for _, s := range cf.sets {
		key, value, ok := strings.Cut(s, "=")
		if !ok || strings.TrimSpace(key) == "" {
			return nil, fmt.Errorf("--set %q: want key=value", s)
		}
		flags[strings.TrimSpace(key)] = value
	}
	return flags, nil
}
