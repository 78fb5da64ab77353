package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/envs"
	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/envs/busenv"
)

func newEnvCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "env",
		Short: "List and play the environments",
	}
	cmd.AddCommand(newEnvListCmd(), newEnvPlayCmd(), newEnvServeCmd(), newEnvCheckCmd())
	return cmd
}

func newEnvListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--bus URL]",
		Short: "List environments and their variants (the first variant is the default)",
		Long: `List the built-in environments and their variants (the first is the default).

With --bus, list what is being served on that bus instead: each environment with its hosts (in any
language), the variants they serve and the sessions they hold. Hosts answer on spa.env.hosts
(docs/bus-protocol.md); one that does not is not listed, though agents can still play it.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if cfg.Bus.URL != "" {
			return listServed(cmd, cfg.Bus, asJSON)
		}
		if asJSON {
			return json.NewEncoder(out).Encode(envs.List())
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENV\tVARIANT\tDESCRIPTION")
		for _, info := range envs.List() {
			for i, v := range info.Variants {
				name, variant := "", v.Name
				if i == 0 {
					name, variant = info.Name, v.Name+" (default)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", name, variant, v.Description)
			}
		}
		return tw.Flush()
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// listServed prints the environments hosts serve on a bus, one line per host.
func listServed(cmd *cobra.Command, bc config.Bus, asJSON bool) error {
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	nc, err := bus.Connect(ctx, busOptions(bc, "spa-env-list"))
	if err != nil {
		return err
	}
	defer nc.Close()
	hosts, err := busenv.ListHosts(ctx, nc, min(bc.Timeout, time.Second))
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(hosts)
	}
	if len(hosts) == 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "no environment host answered on %s within %s\n", nc.ConnectedUrlRedacted(), min(bc.Timeout, time.Second))
		return nil
	}
	perEnv := map[string]int{}
	for _, h := range hosts {
		perEnv[h.Env]++
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENV\tHOSTS\tHOST\tRUNTIME\tVARIANTS\tSESSIONS")
	last := ""
	for _, h := range hosts {
		name, count := "", ""
		if h.Env != last {
			name, count, last = h.Env, fmt.Sprint(perEnv[h.Env]), h.Env
		}
		variants := strings.Join(h.Variants, ",")
		if variants == "" {
			variants = "all"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", name, count, h.Host, h.Runtime, variants, h.Sessions)
	}
	return tw.Flush()
}

func newEnvPlayCmd() *cobra.Command {
	var coords, asJSON bool
	cmd := &cobra.Command{
		Use:   "play NAME",
		Short: "Play an environment in the terminal, one action per line",
		Long: `Play an environment in the terminal: the state is shown, and each line you type is one action
(for Sokoban and FrozenLake a direction such as "up"; for Sudoku "r,c,v"). The game ends when it is
solved, lost, out of actions, or at end of input.

With --bus, the environment is the one hosts serve on that bus (any language, see
docs/bus-protocol.md), played exactly as a built-in one.

With --json, spa prints one JSON object when the game starts ({"observation", "seed", ...}) and one
per action ({"action", "observation", "reward", "done", "success", "valid"}), so scripts can drive
it through stdin and stdout. Without --seed, a seed is drawn from the clock and printed.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		var env envs.Env
		if cfg.Bus.URL == "" {
			if env, err = envs.New(args[0], cfg.Env.Variant); err != nil {
				return err
			}
		} else {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			nc, err := bus.Connect(ctx, busOptions(cfg.Bus, "spa-env-play"))
			if err != nil {
				return err
			}
			defer nc.Close()
			remote, err := busenv.Dial(ctx, nc, args[0], busenv.RemoteOptions{Variant: cfg.Env.Variant, Timeout: cfg.Bus.Timeout})
			if err != nil {
				return err
			}
			defer remote.Close()
			env = remote
		}
		seed := int64(cfg.Run.Seed)
		if !cmd.Flags().Changed("seed") {
			seed = time.Now().UnixNano() % 1_000_000
		}
		if err := env.Reset(seed); err != nil {
			return fmt.Errorf("reset %s: %w", args[0], err)
		}
		mode := envs.Raw
		if coords {
			mode = envs.Coords
		}
		if asJSON {
			return playJSON(env, seed, mode, cmd.InOrStdin(), cmd.OutOrStdout())
		}
		return playInteractive(env, seed, mode, cmd.InOrStdin(), cmd.OutOrStdout())
	}
	cmd.Flags().BoolVar(&coords, "coords", false, "show the coordinate line under the grid")
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable: JSON lines in and out")
	return cmd
}

func playJSON(env envs.Env, seed int64, mode envs.RenderMode, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	spec := env.Spec()
	if err := enc.Encode(map[string]any{
		"env": spec.Name, "variant": spec.Variant, "seed": seed,
		"observation": env.Render(mode), "actions": spec.Actions, "max_actions": spec.MaxActions,
	}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		action := strings.TrimSpace(sc.Text())
		if action == "" {
			continue
		}
		st, err := env.Step(action)
		if err != nil {
			return err
		}
		if err := enc.Encode(struct {
			Action      string `json:"action"`
			Observation string `json:"observation"`
			envs.Step
		}{action, env.Render(mode), st}); err != nil {
			return err
		}
		if st.Done {
			break
		}
	}
	return sc.Err()
}

func playInteractive(env envs.Env, seed int64, mode envs.RenderMode, in io.Reader, out io.Writer) error {
	spec := env.Spec()
	fmt.Fprintf(out, "%s %s, seed %d\n\n%s\n\nSymbols: %s\nActions: %s (%s); at most %d per episode.\n\n%s\n",
		spec.Name, spec.Variant, seed, spec.Instructions, spec.Legend,
		strings.Join(spec.Actions, ", "), spec.ActionFormat, spec.MaxActions, env.Render(mode))
	sc := bufio.NewScanner(in)
	total, used := 0.0, 0
	for {
		fmt.Fprintf(out, "\naction> ")
		if !sc.Scan() {
			fmt.Fprintf(out, "\nend of input after %d actions; total reward %.1f\n", used, total)
			return sc.Err()
		}
		action := strings.TrimSpace(sc.Text())
		if action == "" {
			continue
		}
		st, err := env.Step(action)
		if err != nil {
			return err
		}
		if !st.Valid {
			fmt.Fprintf(out, "invalid action %q: nothing changed (actions: %s)\n", action, strings.Join(spec.Actions, ", "))
			continue
		}
		used++
		total += st.Reward
		fmt.Fprintf(out, "reward %.1f (total %.1f, %d/%d actions)\n%s\n", st.Reward, total, used, spec.MaxActions, env.Render(mode))
		if st.Done {
			if st.Success {
				fmt.Fprintf(out, "\nsolved in %d actions; total reward %.1f\n", used, total)
			} else {
				fmt.Fprintf(out, "\ngame over after %d actions; total reward %.1f\n", used, total)
			}
			return nil
		}
	}
}

func newEnvCheckCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check NAME --bus URL",
		Short: "Check that the hosts of an environment speak the bus protocol",
		Long: `Run the protocol's conformance suite against whatever hosts serve NAME on the bus, in any
language: the spec and a reset are complete, a seed always gives the same episode, an episode ends
within its budget, and each of about 30 bad or edge-case requests gets the error code
docs/bus-protocol.md gives it (envs/busenv/conformance.json). It prints one line per check and
exits 1 when any fails. spa's own hosts, the Node example and the Python SDK pass it.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "deadline of each request")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if cfg.Bus.URL == "" {
			return errors.New("spa env check needs --bus nats://HOST:PORT, the bus the hosts serve on")
		}
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		nc, err := bus.Connect(ctx, busOptions(cfg.Bus, "spa-env-check"))
		if err != nil {
			return err
		}
		defer nc.Close()
		results, err := busenv.Conformance(ctx, nc, args[0], timeout)
		if err != nil {
			return err
		}
		var failed, skipped int
		for _, r := range results {
			switch {
			case r.Err != nil:
				failed++
				fmt.Fprintf(cmd.OutOrStdout(), "FAIL  %s: %v\n", r.Name, r.Err)
			case r.Skipped != "":
				skipped++
				fmt.Fprintf(cmd.OutOrStdout(), "skip  %s: %s\n", r.Name, r.Skipped)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "ok    %s\n", r.Name)
			}
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %d checks, %d failed, %d skipped\n", args[0], len(results), failed, skipped)
		if failed > 0 {
			return fmt.Errorf("%s: %d of %d conformance checks failed", args[0], failed, len(results))
		}
		return nil
	}
	return cmd
}

func newEnvServeCmd() *cobra.Command {
	var variants []string
	cmd := &cobra.Command{
		Use:   "serve NAME --bus URL [--variant V] [--replicas N]",
		Short: "Host an environment on the bus for remote agents",
		Long: `Host an environment on the bus: agents anywhere reset and step it through NATS request/reply
(the protocol is in docs/bus-protocol.md). Every host of an environment joins one queue group, so
start as many as the load needs, here (--replicas) or on other machines; each episode stays on the
host that started it.

Without --variant the host serves every variant of the environment; with it, only those named
(comma-separated), the first being the default. Sessions idle longer than env.session_ttl are
dropped. The host stops cleanly on Ctrl-C or SIGTERM.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd)
	// The common flags already define --variant as env.variant; serve reads it as a list.
	cmd.Flags().Lookup("variant").Usage = "variants to serve, comma-separated; the first is the default (env.variant; default: all)"
	// Both flags are config keys, so they are checked as --set and SPA_ENV_* are.
	cf.keyFlag("replicas", "env.replicas", "hosts in this process")
	cf.keyFlag("session-ttl", "env.session_ttl", "drop sessions idle this long, e.g. 5m")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		name := strings.ToLower(args[0])
		info, ok := envInfo(name)
		if !ok {
			return fmt.Errorf("unknown environment %q (known: %s)", args[0], strings.Join(envs.Names(), ", "))
		}
		if cfg.Bus.URL == "" {
			return errors.New("spa env serve needs --bus nats://HOST:PORT (a 'spa bus' or any NATS server with JetStream), so that agents in other processes can reach it")
		}
		if cfg.Env.Variant != "" {
			variants = strings.Split(cfg.Env.Variant, ",")
		}
		replicas, ttl := cfg.Env.Replicas, cfg.Env.SessionTTL
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		nc, err := bus.Connect(ctx, busOptions(cfg.Bus, "spa-env-"+name))
		if err != nil {
			return err
		}
		defer nc.Close()
		var hosts []*busenv.Host
		for range replicas {
			h, err := busenv.NewHost(nc, busenv.HostOptions{
				Env: info.Name, Variants: variants, SessionTTL: ttl,
				New: func(v string) (envs.Env, error) { return envs.New(info.Name, v) },
			})
			if err != nil {
				return err
			}
			defer h.Close()
			hosts = append(hosts, h)
		}
		served := "all variants"
		if len(variants) > 0 {
			served = "variants " + strings.Join(variants, ", ")
		}
		fmt.Fprintf(cmd.OutOrStdout(), "serving %s (%s) on %s with %d host(s): %s\n", info.Name, served, nc.ConnectedUrlRedacted(), len(hosts), bus.EnvSubject(info.Name, "reset"))
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				var total busenv.HostStats
				for _, h := range hosts {
					st := h.Stats()
					total.Resets += st.Resets
					total.Steps += st.Steps
					total.Errors += st.Errors
				}
				fmt.Fprintf(cmd.OutOrStdout(), "stopping: %d resets, %d steps, %d errors served\n", total.Resets, total.Steps, total.Errors)
				return nil
			case <-tick.C:
				for i, h := range hosts {
					st := h.Stats()
					fmt.Fprintf(cmd.ErrOrStderr(), "host %d: %d sessions, %d resets, %d steps, %d expired, %d errors\n", i, st.Sessions, st.Resets, st.Steps, st.Expired, st.Errors)
				}
			}
		}
	}
	return cmd
}

func envInfo(name string) (envs.Info, bool) {
	for _, i := range envs.List() {
		if i.Name == name {
			return i, true
		}
	}
	return envs.Info{}, false
}
