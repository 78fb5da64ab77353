package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"

	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/domain"
)

type serveBench struct {
	Load            []inference.LoadResult    `json:"load"`
	Baseline        inference.LoadResult      `json:"one_at_a_time"`
	BatchingSpeedup float64                   `json:"batching_speedup"`
	MatmulFLOPS     float64                   `json:"matmul_flops"`
	ModelFLOPS      float64                   `json:"model_flops"`
	HotReloadSec    float64                   `json:"hot_reload_seconds"`
	MultiTurn       inference.MultiTurnResult `json:"multi_turn_cached"`
	MultiTurnPlain  inference.MultiTurnResult `json:"multi_turn_uncached"`
	PrefixSpeedup   float64                   `json:"prefix_speedup"`
	PrefixHitRate   float64                   `json:"prefix_hit_rate"`
	// ModelAlone64 is the model's own batch-64 generation rate, without the server.
	ModelAlone64 float64 `json:"model_alone_batch64_tokens_per_sec"`
	// Decode at a short and a long context, at concurrency 8 and 64 (short, long, short, long).
	Decode []inference.LoadResult `json:"decode_by_context"`
	// LongMultiTurn are agent-shaped conversations whose prompts grow from ~500 to ~2,100 tokens,
	// with 8 and 64 episodes at once.
	LongMultiTurn []inference.MultiTurnResult `json:"long_multi_turn"`
}

// localServer serves srv on a loopback port until the returned stop is called.
func localServer(srv http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	return "http://" + ln.Addr().String() + "/v1", func() { hs.Close() }, nil
}

func newBenchServeCmd() *cobra.Command {
	var asJSON bool
	var duration time.Duration
	var peer, peerKey, checkpoint string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Throughput, time to first token, batching gain, hot reload and prefix caching of spa serve",
		Long: `Measure the inference server on the tiny preset over real loopback HTTP:

  - output tokens/s and time to first token (p50/p99) at concurrency 1, 8 and 64: streaming
    requests of a 32-token prompt and 64 greedy tokens, back to back;
  - the same concurrency-64 load against a one-request-at-a-time server (max batch 1), in the same
    run; target: >= 8x its throughput;
  - achieved FLOP/s at concurrency 64 as a share of a 1024x1024 matmul's FLOP/s measured here;
  - hot reload: from writing new weights to the first response from the new version; target <= 1 s;
  - concurrency 64 against the model alone generating at batch 64 (spa bench model's case);
    target: >= 80%;
  - a multi-turn workload (8 episodes x 5 turns, each re-sending its history) with and without
    prefix caching: the speed-up and the share of prompt tokens taken from the cache;
  - decoding after a 32-token and after a 1,500-token prompt (256 tokens, concurrency 8 and 64):
    tokens/s after the first token, and the long/short ratio, which attention's arithmetic alone
    would keep near 1 for this model;
  - agent-shaped conversations: 8 and 64 episodes x 4 turns whose prompts grow from 480 to about
    2,100 tokens (480 new tokens and a 64-token reply per turn).

With --peer URL --checkpoint DIR it measures another server instead, side by side: spa serves DIR
in this process, the peer (vLLM, say, started on the same DIR with served name "spa") is at URL,
and the load rows (concurrency 1, 8 and 64) run against each in turn, with spa's rate over the
peer's. The peer must stream token ids with return_token_ids, as vLLM does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			progress := func(s string) {
				if !asJSON {
					fmt.Fprintln(cmd.ErrOrStderr(), s)
				}
			}
			if peer != "" || checkpoint != "" {
				if peer == "" || checkpoint == "" {
					return errors.New("bench serve: --peer and --checkpoint go together (the peer serves that checkpoint)")
				}
				return benchServePeer(ctx, cmd.OutOrStdout(), progress, peer, peerKey, checkpoint, duration, asJSON)
			}
			dir, err := os.MkdirTemp("", "spa-bench-serve-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			ckpt := filepath.Join(dir, "v0")
			progress("writing a tiny checkpoint...")
			cfg, err := writeTinyCheckpoint(ckpt, 1)
			if err != nil {
				return err
			}
			openLen := func(maxBatch, prefixMB, maxLen int) (*inference.Server, string, func(), error) {
				srv, err := inference.Open(ctx, ckpt, inference.Options{MaxBatch: maxBatch, MaxModelLen: maxLen, KVCacheMB: 1024, PrefixCacheMB: prefixMB, MaxVersions: 2}, api.Options{})
				if err != nil {
					return nil, "", nil, err
				}
				url, stopHTTP, err := localServer(srv)
				if err != nil {
					srv.Close()
					return nil, "", nil, err
				}
				return srv, url, func() { stopHTTP(); srv.Close() }, nil
			}
			open := func(maxBatch, prefixMB int) (*inference.Server, string, func(), error) {
				return openLen(maxBatch, prefixMB, 512)
			}
			var res serveBench
			prompt := make([]int, 32)
			for i := range prompt {
				prompt[i] = 3 + i*7%200
			}
			srv, url, closeSrv, err := open(64, 0)
			if err != nil {
				return err
			}
			for _, c := range []int{1, 8, 64} {
				progress(fmt.Sprintf("load at concurrency %d...", c))
				res.Load = append(res.Load, inference.Load(ctx, url, "", c, prompt, 64, duration))
			}
			progress("one request at a time, concurrency 64...")
			_, baseURL, closeBase, err := open(1, 0)
			if err != nil {
				closeSrv()
				return err
			}
			res.Baseline = inference.Load(ctx, baseURL, "", 64, prompt, 64, duration)
			closeBase()
			res.BatchingSpeedup = res.Load[2].TokensPerSec / res.Baseline.TokensPerSec
			err = onTorchThread(func() error {
				res.MatmulFLOPS = model.MeasureMatmul(1024, 20)
				r, err := model.MeasureGeneration(cfg, gotch.CPU, 64, len(prompt), 64)
				res.ModelAlone64 = r.TokensPerSec
				return err
			})
			if err != nil {
				closeSrv()
				return err
			}
			res.ModelFLOPS = res.Load[2].TokensPerSec * cfg.FLOPsPerToken(64)

			progress("hot reload...")
			res.HotReloadSec, err = measureHotReload(ctx, url, filepath.Join(dir, "v1"))
			if err != nil {
				closeSrv()
				return err
			}
			closeSrv()
			_ = srv

			progress("multi-turn with and without prefix caching...")
			for _, cached := range []bool{true, false} {
				prefixMB := 256
				if !cached {
					prefixMB = -1
				}
				s, u, closeS, err := open(64, prefixMB)
				if err != nil {
					return err
				}
				r, err := inference.MultiTurn(ctx, u, 8, 5, 24, 16)
				reused, computed := s.Engine().PrefixStats()
				closeS()
				if err != nil {
					return err
				}
				if cached {
					res.MultiTurn = r
					res.PrefixHitRate = float64(reused) / float64(reused+computed)
				} else {
					res.MultiTurnPlain = r
				}
			}
			res.PrefixSpeedup = res.MultiTurnPlain.Seconds / res.MultiTurn.Seconds

			progress("decoding at short and long contexts...")
			// Room for the conversations' last turn (4 x 480 new tokens and 3 replies of 64).
			_, longURL, closeLong, err := openLen(64, 256, 2400)
			if err != nil {
				return err
			}
			long := make([]int, longContext)
			for i := range long {
				long[i] = 3 + i*13%200
			}
			for _, c := range []int{8, 64} {
				for _, pr := range [][]int{prompt, long} {
					res.Decode = append(res.Decode, inference.Load(ctx, longURL, "", c, pr, longReply, duration))
				}
			}
			progress("agent-shaped conversations, prompts growing to ~2k tokens...")
			for _, episodes := range []int{8, 64} {
				r, err := inference.MultiTurn(ctx, longURL, episodes, 4, 480, 64)
				if err != nil {
					closeLong()
					return err
				}
				res.LongMultiTurn = append(res.LongMultiTurn, r)
			}
			closeLong()

			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"machine": thisMachine(), "results": res})
			}
			m := thisMachine()
			fmt.Fprintf(out, "%s, %d cores; tiny preset over loopback HTTP, 32-token prompts, 64 greedy tokens\n", m.CPU, m.Cores)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEASUREMENT\tRESULT\tTARGET\t")
			for _, l := range res.Load {
				fmt.Fprintf(tw, "concurrency %d\t%s tok/s, TTFT p50 %.0f ms, p99 %.0f ms (%d requests, %d failed)\t\t\n", l.Concurrency, humanRate(l.TokensPerSec), l.TTFTp50ms, l.TTFTp99ms, l.Requests, l.Failed)
			}
			b := res.Baseline
			fmt.Fprintf(tw, "one at a time, concurrency 64\t%s tok/s, TTFT p50 %.0f ms\t\t\n", humanRate(b.TokensPerSec), b.TTFTp50ms)
			fmt.Fprintf(tw, "continuous batching gain\t%.1fx\t>= 8x %s\t\n", res.BatchingSpeedup, verdict(res.BatchingSpeedup >= 8))
			share := res.Load[2].TokensPerSec / res.ModelAlone64
			fmt.Fprintf(tw, "concurrency 64 / model alone at batch 64\t%s / %s tok/s = %.0f%%\t>= 80%% %s\t\n", humanRate(res.Load[2].TokensPerSec), humanRate(res.ModelAlone64), 100*share, verdict(share >= 0.8))
			fmt.Fprintf(tw, "achieved FLOP/s at concurrency 64\t%.2f GFLOP/s = %.1f%% of matmul (%.0f GFLOP/s)\t\t\n", res.ModelFLOPS/1e9, 100*res.ModelFLOPS/res.MatmulFLOPS, res.MatmulFLOPS/1e9)
			fmt.Fprintf(tw, "hot reload (write weights -> first response)\t%.0f ms\t<= 1000 ms %s\t\n", res.HotReloadSec*1e3, verdict(res.HotReloadSec <= 1))
			fmt.Fprintf(tw, "multi-turn, prefix cache on / off\t%.2fs / %.2fs = %.1fx, %.0f%% of prompt tokens from the cache\t\t\n",
				res.MultiTurn.Seconds, res.MultiTurnPlain.Seconds, res.PrefixSpeedup, 100*res.PrefixHitRate)
			for i := 0; i+1 < len(res.Decode); i += 2 {
				short, long := res.Decode[i], res.Decode[i+1]
				fmt.Fprintf(tw, "decode at concurrency %d, %d vs %d-token context\t%s vs %s tok/s = %.2fx\t\t\n", short.Concurrency, short.PromptTokens, long.PromptTokens,
					humanRate(short.DecodeTokensPerSec), humanRate(long.DecodeTokensPerSec), long.DecodeTokensPerSec/short.DecodeTokensPerSec)
			}
			for _, r := range res.LongMultiTurn {
				fmt.Fprintf(tw, "%d agents x %d turns, prompts to %d tokens\t%.1fs, %s output tok/s\t\t\n", r.Episodes, r.Turns, r.LastPromptTokens, r.Seconds, humanRate(r.TokensPerSec))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	cmd.Flags().DurationVar(&duration, "duration", 5*time.Second, "time per load measurement")
	cmd.Flags().StringVar(&peer, "peer", "", "another OpenAI-compatible server (…/v1) to measure side by side with spa serve")
	cmd.Flags().StringVar(&peerKey, "peer-api-key", "", "bearer token for --peer (default $OPENAI_API_KEY)")
	cmd.Flags().StringVar(&checkpoint, "checkpoint", "", "with --peer: the checkpoint directory both servers serve")
	return cmd
}

// peerBench is one load row measured against spa serve and a peer in the same run.
type peerBench struct {
	Spa  inference.LoadResult `json:"spa"`
	Peer inference.LoadResult `json:"peer"`
}

// benchServePeer runs the load rows against spa serving dir in process and against peer (which
// serves the same checkpoint), alternating so that drift on a shared machine hits both alike.
func benchServePeer(ctx context.Context, out io.Writer, progress func(string), peer, key, dir string, d time.Duration, asJSON bool) error {
	if key == "" {
		key = os.Getenv("OPENAI_API_KEY")
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return fmt.Errorf("bench serve: %w", err)
	}
	srv, err := inference.Open(ctx, dir, inference.Options{MaxBatch: 64, MaxModelLen: 512, KVCacheMB: 1024, MaxVersions: 2}, api.Options{})
	if err != nil {
		return fmt.Errorf("bench serve: %w", err)
	}
	defer srv.Close()
	url, stopHTTP, err := localServer(srv)
	if err != nil {
		return err
	}
	defer stopHTTP()
	prompt := make([]int, 32)
	for i := range prompt {
		prompt[i] = 3 + i*7%min(200, cfg.VocabSize-3)
	}
	peer = strings.TrimRight(peer, "/")
	progress("checking the peer streams token ids...")
	if r := inference.Load(ctx, peer, key, 1, prompt, 8, 200*time.Millisecond); r.Requests == 0 || r.Failed > 0 {
		return fmt.Errorf("bench serve: %s gave no streamed token ids (is it serving %q as \"spa\", and does it take return_token_ids?)", peer, dir)
	}
	var rows []peerBench
	for _, c := range []int{1, 8, 64} {
		progress(fmt.Sprintf("concurrency %d: spa, then the peer...", c))
		var row peerBench
		row.Spa = inference.Load(ctx, url, "", c, prompt, 64, d)
		row.Peer = inference.Load(ctx, peer, key, c, prompt, 64, d)
		rows = append(rows, row)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(out).Encode(map[string]any{"machine": thisMachine(), "checkpoint": dir, "peer": peer, "results": rows})
	}
	m := thisMachine()
	fmt.Fprintf(out, "%s, %d cores; %s served by spa and by %s; 32-token prompts, 64 greedy tokens, streaming\n", m.CPU, m.Cores, dir, peer)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONCURRENCY\tSPA\tPEER\tSPA / PEER\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s tok/s, TTFT p50 %.0f ms, p99 %.0f ms (%d failed)\t%s tok/s, TTFT p50 %.0f ms, p99 %.0f ms (%d failed)\t%.2fx\t\n", r.Spa.Concurrency,
			humanRate(r.Spa.TokensPerSec), r.Spa.TTFTp50ms, r.Spa.TTFTp99ms, r.Spa.Failed,
			humanRate(r.Peer.TokensPerSec), r.Peer.TTFTp50ms, r.Peer.TTFTp99ms, r.Peer.Failed, r.Spa.TokensPerSec/r.Peer.TokensPerSec)
	}
	return tw.Flush()
}

// The long-context shape: a multi-turn agent's prompt late in an episode, and a reply.
const longContext, longReply = 1500, 256

// writeTinyCheckpoint writes a random tiny-preset checkpoint with a quickly trained domain tokenizer.
func writeTinyCheckpoint(dir string, seed uint64) (cfg model.Config, err error) {
	err = onTorchThread(func() error {
		cfg, _, err = model.Init(dir, model.InitOptions{Tokenizer: domain.Options{VocabSize: 1024, Seeds: 20}, Seed: seed})
		return err
	})
	return cfg, err
}

func saveRandom(dir string, cfg model.Config, seed uint64) error {
	return onTorchThread(func() error {
		m, err := model.New(cfg, model.Options{Seed: seed})
		if err != nil {
			return err
		}
		defer m.Close()
		return model.Save(dir, m, model.SaveOptions{})
	})
}

// measureHotReload writes a new checkpoint, loads it through /update_weights and waits for the
// first response that names the new version.
func measureHotReload(ctx context.Context, url, dir string) (float64, error) {
	src := strings.TrimSuffix(url, "/v1")
	start := time.Now()
	cfg, err := model.LoadConfig(filepath.Join(filepath.Dir(dir), "v0"))
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	if err := saveRandom(dir, cfg, 2); err != nil {
		return 0, err
	}
	body := fmt.Sprintf(`{"weight_dir":%q,"version":1}`, dir)
	resp, err := http.Post(src+"/update_weights", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("update_weights: status %d", resp.StatusCode)
	}
	resp, err = http.Post(url+"/completions", "application/json", strings.NewReader(`{"model":"spa","prompt":[5,6,7],"max_tokens":1}`))
	if err != nil {
		return 0, err
	}
	var out struct {
		Model string `json:"model"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Model != "spa-v1" {
		return 0, fmt.Errorf("after the update the server answered as %q", out.Model)
	}
	return time.Since(start).Seconds(), ctx.Err()
}
