package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/busenv"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/stack"
	"github.com/spa-rl/spa/torchrt"
)

// soakSample is the process's state at one moment of the soak.
type soakSample struct {
	Seconds    float64 `json:"seconds"`
	RSSMiB     float64 `json:"rss_mib"`
	HeapMiB    float64 `json:"go_heap_mib"`
	Goroutines int     `json:"goroutines"`
	Published  int64   `json:"published"`
	Consumed   int64   `json:"consumed"`
}

// soakResult is what `spa bench soak --json` prints.
type soakResult struct {
	Machine  machine      `json:"machine"`
	Duration float64      `json:"duration_s"`
	Workers  int          `json:"workers"`
	Samples  []soakSample `json:"samples"`
	// Growth compares the mean of the last quarter of the samples with the mean of the first
	// quarter after warm-up (the first sample is the start): 1.0 means flat.
	RSSGrowth float64 `json:"rss_growth"`
	// RSSSlope is the least-squares slope of RSS after the first quarter, in MiB/s.
	RSSSlope        float64 `json:"rss_slope_mib_per_s"`
	GoroutineGrowth float64 `json:"goroutine_growth"`
	EpisodesPerSec  float64 `json:"episodes_per_sec"`
	FailedEpisodes  int64   `json:"failed_episodes"`
}

func newBenchSoakCmd() *cobra.Command {
	var asJSON bool
	var duration, every time.Duration
	var workers int
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "RSS and goroutines over time under steady load: env host, server, workers, bus, consumer",
		Long: `Run the training loop's data path in this process under steady load for --duration: an
embedded NATS with JetStream, a Sokoban env host on the bus, spa's inference server with a tiny
model over loopback HTTP, rollout workers in token mode publishing trajectories, and a consumer
that fetches and acknowledges them as a learner does. Every --every it samples the process's RSS
(C++ allocations included), the Go heap and the goroutine count, and at the end it compares the
last quarter of the run with the first: a leak shows as growth above 1.0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if duration < 4*every || every <= 0 {
				return fmt.Errorf("--duration %s must hold at least 4 samples of --every %s", duration, every)
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			res, err := soak(ctx, duration, every, workers, func(s soakSample) {
				if !asJSON {
					fmt.Fprintf(cmd.ErrOrStderr(), "%6.0fs  rss %7.1f MiB  heap %6.1f MiB  goroutines %5d  published %7d  consumed %7d\n",
						s.Seconds, s.RSSMiB, s.HeapMiB, s.Goroutines, s.Published, s.Consumed)
				}
			})
			if err != nil {
				return err
			}
			if asJSON {
				return encodeJSON(cmd, res)
			}
			out := cmd.OutOrStdout()
			m := res.Machine
			fmt.Fprintf(out, "%s, %d cores; %s of steady load, %d rollout workers, %.1f episodes/s, %d failed\n",
				m.CPU, m.Cores, time.Duration(res.Duration*float64(time.Second)).Round(time.Second), res.Workers, res.EpisodesPerSec, res.FailedEpisodes)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			first, last := res.Samples[1], res.Samples[len(res.Samples)-1]
			fmt.Fprintln(tw, "\tAFTER WARM-UP\tAT THE END\tLAST QUARTER / FIRST QUARTER\t")
			fmt.Fprintf(tw, "RSS\t%.1f MiB\t%.1f MiB\t%.3f\t\n", first.RSSMiB, last.RSSMiB, res.RSSGrowth)
			fmt.Fprintf(tw, "goroutines\t%d\t%d\t%.3f\t\n", first.Goroutines, last.Goroutines, res.GoroutineGrowth)
			if err := tw.Flush(); err != nil {
				return err
			}
			info, _ := torchrt.ReadInfo()
			fmt.Fprintf(out, "RSS slope after the first quarter: %+.3f MiB/s (least squares; allocator %s)\n", res.RSSSlope, info.Allocator)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().DurationVar(&duration, "duration", 2*time.Minute, "how long to run")
	cmd.Flags().DurationVar(&every, "every", 5*time.Second, "sampling interval")
	cmd.Flags().IntVar(&workers, "workers", 8, "concurrent episodes")
	return cmd
}

// soak runs the load and samples the process; sample is called with each sample as it is taken.
func soak(ctx context.Context, duration, every time.Duration, workers int, sample func(soakSample)) (soakResult, error) {
	res := soakResult{Machine: thisMachine(), Workers: workers}
	dir, err := os.MkdirTemp("", "spa-bench-soak-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ckpt := filepath.Join(dir, "tiny")
	if _, err := writeTinyCheckpoint(ckpt, 1); err != nil {
		return res, err
	}
	st, err := stack.Start(ctx, stack.Options{Bus: bus.Options{StoreDir: filepath.Join(dir, "nats"), Listen: "127.0.0.1:0"}, Env: "sokoban"})
	if err != nil {
		return res, err
	}
	defer st.Close()
	if err := st.Serve(ctx, ckpt, inference.Options{MaxBatch: 64, MaxModelLen: 1024, KVCacheMB: 256, MaxVersions: 2}, api.Options{}); err != nil {
		return res, err
	}
	b, pub, url := st.Bus, st.Publisher, st.BaseURL
	const run = "soak"
	cons, err := bus.NewConsumer(ctx, b, run, bus.ConsumerOptions{AckWait: time.Minute})
	if err != nil {
		return res, err
	}
	tokens, err := loadTokens(ckpt)
	if err != nil {
		return res, err
	}
	client, err := rollout.NewClient(rollout.ClientOptions{BaseURL: url, Timeout: time.Minute})
	if err != nil {
		return res, err
	}
	router, err := rollout.NewRouter([]string{url}, []rollout.LLM{client})
	if err != nil {
		return res, err
	}

	loadCtx, stopLoad := context.WithTimeout(ctx, duration)
	defer stopLoad()
	var published, consumed atomic.Int64
	consumerDone := make(chan error, 1)
	go func() {
		for loadCtx.Err() == nil {
			ds, err := cons.Fetch(loadCtx, 64, time.Second)
			if err != nil {
				if loadCtx.Err() != nil {
					break
				}
				consumerDone <- err
				return
			}
			if err := cons.Ack(context.WithoutCancel(loadCtx), ds); err != nil {
				consumerDone <- err
				return
			}
			consumed.Add(int64(len(ds)))
		}
		consumerDone <- nil
	}()

	began := time.Now()
	take := func() soakSample {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := soakSample{Seconds: time.Since(began).Seconds(), RSSMiB: rssMiB(), HeapMiB: float64(ms.HeapAlloc) / (1 << 20),
			Goroutines: runtime.NumGoroutine(), Published: published.Load(), Consumed: consumed.Load()}
		res.Samples = append(res.Samples, s)
		sample(s)
		return s
	}
	take()
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				take()
			case <-loadCtx.Done():
				return
			}
		}
	}()
	stats, err := rollout.RunWorkers(loadCtx, rollout.WorkerOptions{
		Run: run, Worker: "soak", Workers: workers, GroupSize: 4, SeedBase: 1 << 20, Tokens: tokens, Router: router,
		Episode: rollout.EpisodeOptions{PromptOptions: rollout.PromptOptions{Mode: rollout.WorldModel, Render: envs.Coords, MaxActionsPerTurn: 5},
			MaxTurns: 3, MaxTokens: 48, Temperature: 1, TopP: 1},
		NewEnv: func() (envs.Env, error) {
			return busenv.Dial(loadCtx, b.Conn, "sokoban", busenv.RemoteOptions{Timeout: 5 * time.Second})
		},
		Publish: func(ctx context.Context, tr *bus.Trajectory) error {
			if err := pub.Publish(ctx, tr); err != nil {
				return err
			}
			published.Add(1)
			return nil
		},
		// Episodes in flight at the end finish, so that none counts as failed.
		Drain: time.Minute,
	})
	<-samplerDone
	if cerr := <-consumerDone; cerr != nil && err == nil {
		err = cerr
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if perr := pub.Close(closeCtx); perr != nil && err == nil {
		err = perr
	}
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return res, err
	}
	res.Duration = time.Since(began).Seconds()
	res.EpisodesPerSec = float64(stats.Episodes) / res.Duration
	res.FailedEpisodes = stats.Failed
	if len(res.Samples) < 5 {
		return res, fmt.Errorf("soak: %d samples; run longer", len(res.Samples))
	}
	// The first sample is the idle start; quarters are taken over the rest.
	rest := res.Samples[1:]
	q := max(1, len(rest)/4)
	mean := func(ss []soakSample, f func(soakSample) float64) float64 {
		var sum float64
		for _, s := range ss {
			sum += f(s)
		}
		return sum / float64(len(ss))
	}
	rss := func(s soakSample) float64 { return s.RSSMiB }
	gor := func(s soakSample) float64 { return float64(s.Goroutines) }
	res.RSSGrowth = mean(rest[len(rest)-q:], rss) / mean(rest[:q], rss)
	res.GoroutineGrowth = mean(rest[len(rest)-q:], gor) / mean(rest[:q], gor)
	res.RSSSlope = rssSlope(rest[q:])
	return res, nil
}

// rssSlope is the least-squares slope of RSS over time in MiB/s: a process whose allocator only
// fills its caches levels off, and one that leaks keeps climbing.
func rssSlope(ss []soakSample) float64 {
	if len(ss) < 2 {
		return 0
	}
	var mt, mr float64
	for _, s := range ss {
		mt += s.Seconds / float64(len(ss))
		mr += s.RSSMiB / float64(len(ss))
	}
	var cov, vt float64
	for _, s := range ss {
		cov += (s.Seconds - mt) * (s.RSSMiB - mr)
		vt += (s.Seconds - mt) * (s.Seconds - mt)
	}
	if vt == 0 {
		return 0
	}
	return cov / vt
}

// rssMiB is the resident set size of this process, from /proc (0 where there is none).
func rssMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
