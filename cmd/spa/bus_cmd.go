package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/harness"
)

// busOptions turns the bus section into connection options for a client named name.
func busOptions(c config.Bus, name string) bus.Options { return harness.BusOptions(c, name) }

// openRunBus connects to bus.url, or, without one, opens the embedded store of run's directory
// (read the results of a finished 'spa run' without a server). The store must already exist:
// creating an empty one would hide a mistyped run id.
func openRunBus(ctx context.Context, cfg config.Config, name, run string) (*bus.Bus, error) {
	opts := busOptions(cfg.Bus, name)
	if opts.URL == "" {
		if opts.StoreDir == "" {
			opts.StoreDir = bus.DefaultStoreDir(filepath.Join(cfg.Run.Dir, run))
		}
		if _, err := os.Stat(opts.StoreDir); err != nil {
			return nil, fmt.Errorf("no --bus URL, and no embedded store for run %q at %s (pass --bus nats://HOST:PORT for a running server, or --run-dir)", run, opts.StoreDir)
		}
		opts.Listen = ""
	}
	return bus.Open(ctx, opts)
}

// runBus is what the run-scoped commands (traj, policy) share: the configuration, the run id
// (--run, else run.id), a context that ends on Ctrl-C, and the run's bus. close releases all.
type runBus struct {
	ctx   context.Context
	run   string
	b     *bus.Bus
	close func()
}

func openRunBusFromFlags(cmd *cobra.Command, cf *configFlags, run, client string) (*runBus, error) {
	cfg, err := cf.load()
	if err != nil {
		return nil, err
	}
	if run == "" {
		run = cfg.Run.ID
	}
	if err := bus.CheckName("run", run); err != nil {
		return nil, fmt.Errorf("%w (pass --run RUN)", err)
	}
	ctx, stop := signalContext(cmd.Context())
	b, err := openRunBus(ctx, cfg, client, run)
	if err != nil {
		stop()
		return nil, err
	}
	return &runBus{ctx: ctx, run: run, b: b, close: func() { b.Close(); stop() }}, nil
}

// signalContext ends when the process is asked to stop.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func newBusCmd() *cobra.Command {
	var listen, store string
	cmd := &cobra.Command{
		Use:   "bus",
		Short: "Run a standalone NATS server with JetStream for multi-machine runs",
		Long: `Run a NATS server with JetStream, for runs spread over processes and machines: env hosts,
rollout workers, servers and the learner all connect to it with --bus nats://HOST:PORT.

It binds 127.0.0.1 unless --listen names another address. bus.user and bus.password, or
bus.token, make clients authenticate. It creates the trajectory stream (SPA_TRAJ) and the policy
bucket (spa_policy) at start, and stops cleanly on Ctrl-C or SIGTERM (JetStream data is kept in
--store). Any nats-server started with -js works as well.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4222", "host:port to listen on (bus.listen)")
	cmd.Flags().StringVar(&store, "store", "", "JetStream store directory (bus.store_dir; default <run-dir>/nats)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if !cmd.Flags().Changed("listen") && cfg.Bus.Listen != "" {
			listen = cfg.Bus.Listen
		}
		if store == "" {
			store = cfg.Bus.StoreDir
		}
		if store == "" {
			store = filepath.Join(cfg.Run.Dir, "nats")
		}
		if cfg.Bus.CredsFile != "" || cfg.Bus.NKeyFile != "" || cfg.Bus.TLSCA != "" {
			return errors.New("spa bus supports user/password and token auth; for creds, nkeys or TLS run nats-server with its own config")
		}
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		opts := busOptions(cfg.Bus, "spa-bus")
		opts.URL, opts.Listen, opts.StoreDir = "", listen, store
		b, err := bus.Open(ctx, opts)
		if err != nil {
			return err
		}
		defer b.Close()
		if _, err := bus.EnsureTrajStream(ctx, b.JS, bus.StreamOptions{}); err != nil {
			return err
		}
		if _, err := bus.OpenPolicies(ctx, b); err != nil {
			return err
		}
		auth := "no auth"
		switch {
		case cfg.Bus.Token != "":
			auth = "token auth"
		case cfg.Bus.User != "":
			auth = "user/password auth"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "spa bus: NATS %s with JetStream on %s (%s), store %s\n", b.Embedded.Version(), b.URL(), auth, store)
		warnExposed(cmd.ErrOrStderr(), "spa bus", listen, auth != "no auth", "Set bus.token or bus.user and bus.password (SPA_BUS_TOKEN), or bind 127.0.0.1.")
		<-ctx.Done()
		fmt.Fprintln(cmd.OutOrStdout(), "spa bus: stopping")
		return nil
	}
	return cmd
}
