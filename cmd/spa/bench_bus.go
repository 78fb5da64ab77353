package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/busenv"
)

// busBenchResult is what 'spa bench bus' measures, with the targets it is held to.
type busBenchResult struct {
	Transport string                `json:"transport"`
	Step      busenv.LatencyResult  `json:"step_round_trip"`
	Stream    bus.StreamBenchResult `json:"stream"`
	Targets   map[string]float64    `json:"targets"`
}

func newBenchBusCmd() *cobra.Command {
	var asJSON bool
	var sdk string
	var duration time.Duration
	var trajectories, publishers int
	cmd := &cobra.Command{
		Use:   "bus",
		Short: "Env step round trips and trajectory stream rates through NATS",
		Long: `Measure the bus on an embedded NATS server with JetStream in a temporary directory, once with
in-process connections (the single-process default) and once over loopback TCP (how separate
processes talk):

  - env step round trip: a Sokoban 6x6 host and a remote env on separate connections; each Step
    is timed (request, host step and render, reply, decode); p50 and p99 after a warm-up;
  - publish: 4 KiB trajectories from several goroutines into the file-backed stream, timed until
    the server has acknowledged every one (encoding included);
  - consume: the same trajectories through a durable pull consumer, 1,000 per fetch, timed until
    all are acknowledged (decoding and validation included).

Targets on a 2-core machine: step p50 <= 50us in-process and <= 100us over TCP; >= 30,000
trajectories/s published.

When the Python SDK's virtual environment is there (--python-sdk, default sdk/python; made by
scripts/pyenv.sh), it also times steps against the SDK's example host, a Python process over TCP,
so that authors know what serving an environment from Python costs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			dir, err := os.MkdirTemp("", "spa-bench-bus-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: dir, Listen: "127.0.0.1:0"})
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			var results []busBenchResult
			for _, transport := range []string{"in-process", "tcp"} {
				if !asJSON {
					fmt.Fprintf(cmd.ErrOrStderr(), "measuring %s...\n", transport)
				}
				r, err := benchBusTransport(ctx, srv, transport, duration, trajectories, publishers)
				if err != nil {
					return fmt.Errorf("bench bus %s: %w", transport, err)
				}
				results = append(results, r)
			}
			py, pyErr := benchPythonHost(ctx, srv, sdk, duration)
			if pyErr != nil && !asJSON {
				fmt.Fprintf(cmd.ErrOrStderr(), "python host: %v\n", pyErr)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"machine": thisMachine(), "nats": srv.Version(), "results": results, "python_host_step": py})
			}
			m := thisMachine()
			fmt.Fprintf(out, "%s, %d cores, %s, embedded NATS %s, file store\n", m.CPU, m.Cores, m.Go, srv.Version())
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEASUREMENT\tTRANSPORT\tRESULT\tTARGET\t")
			for _, r := range results {
				fmt.Fprintf(tw, "env step round trip\t%s\tp50 %.0fµs  p99 %.0fµs  (%d steps)\tp50 <= %.0fµs %s\t\n",
					r.Transport, r.Step.P50us, r.Step.P99us, r.Step.Steps, r.Targets["step_p50_us"], verdict(r.Step.P50us <= r.Targets["step_p50_us"]))
			}
			if py != nil {
				// Measured in the same run as the Go host over TCP, so the ratio compares like with like.
				ratio := "-"
				if r := results[len(results)-1]; r.Transport == "tcp" && r.Step.P50us > 0 {
					ratio = fmt.Sprintf("%.1fx the Go host's p50", py.P50us/r.Step.P50us)
				}
				fmt.Fprintf(tw, "env step round trip, Python host (corridor-py)\ttcp\tp50 %.0fµs  p99 %.0fµs  (%d steps)\t%s\t\n", py.P50us, py.P99us, py.Steps, ratio)
			}
			for _, r := range results {
				fmt.Fprintf(tw, "publish %d B trajectories, %d goroutines\t%s\t%s/s  (%.0f MB/s)\t>= %s/s %s\t\n",
					r.Stream.Bytes, r.Stream.Publishers, r.Transport, humanRate(r.Stream.PublishPerSec), r.Stream.PublishMBps,
					humanRate(r.Targets["publish_per_sec"]), verdict(r.Stream.PublishPerSec >= r.Targets["publish_per_sec"]))
			}
			for _, r := range results {
				fmt.Fprintf(tw, "consume, 1000 per fetch\t%s\t%s/s\t-\t\n", r.Transport, humanRate(r.Stream.ConsumePerSec))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().DurationVar(&duration, "duration", 2*time.Second, "time per latency measurement")
	cmd.Flags().IntVar(&trajectories, "trajectories", 50_000, "trajectories per stream measurement")
	cmd.Flags().IntVar(&publishers, "publishers", 4, "publishing goroutines")
	cmd.Flags().StringVar(&sdk, "python-sdk", filepath.Join("sdk", "python"), "the Python SDK, with its .venv (scripts/pyenv.sh)")
	return cmd
}

// benchPythonHost times step round trips against the Python SDK's example host over TCP; it
// returns nil, with the reason, when the SDK's virtual environment is missing.
func benchPythonHost(ctx context.Context, srv *bus.Embedded, sdk string, d time.Duration) (*busenv.LatencyResult, error) {
	python := filepath.Join(sdk, ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		return nil, fmt.Errorf("not measured: no %s (run scripts/pyenv.sh)", python)
	}
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	host := exec.CommandContext(ctx, python, filepath.Join(sdk, "examples", "corridor.py"), "--bus", srv.ClientURL())
	host.Stderr = os.Stderr
	if err := host.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = host.Process.Kill(); _ = host.Wait() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	// The host is ready once it answers the spec.
	for {
		if _, err := nc.RequestWithContext(ctx, bus.EnvSubject("corridor-py", "spec"), []byte(`{"protocol":1}`)); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the Python host did not start: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	r, err := busenv.MeasureStepLatency(ctx, nc, "corridor-py", "7", d)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func benchBusTransport(ctx context.Context, srv *bus.Embedded, transport string, d time.Duration, n, publishers int) (busBenchResult, error) {
	res := busBenchResult{Transport: transport, Targets: map[string]float64{"step_p50_us": 50, "publish_per_sec": 30_000}}
	dial := srv.Connect
	if transport == "tcp" {
		res.Targets["step_p50_us"] = 100
		dial = func(opts ...nats.Option) (*nats.Conn, error) { return nats.Connect(srv.ClientURL(), opts...) }
	}
	hostConn, err := dial()
	if err != nil {
		return res, err
	}
	defer hostConn.Close()
	host, err := busenv.NewHost(hostConn, busenv.HostOptions{Env: "sokoban", New: func(v string) (envs.Env, error) { return envs.New("sokoban", v) }})
	if err != nil {
		return res, err
	}
	defer host.Close()
	clientConn, err := dial()
	if err != nil {
		return res, err
	}
	defer clientConn.Close()
	if res.Step, err = busenv.MeasureStepLatency(ctx, clientConn, "sokoban", "6x6-1box", d); err != nil {
		return res, err
	}
	b, err := bus.FromConn(ctx, clientConn)
	if err != nil {
		return res, err
	}
	res.Stream, err = bus.MeasureStream(ctx, b, "bench-"+transport, n, 4096, publishers)
	return res, err
}
