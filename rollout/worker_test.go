package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

// TestRoutingSticksSpreadsAndSurvivesAFailingServer runs workers over three fake servers, one of
// which starts failing mid-run: every episode is published once, every episode's turns went to one
// server, and the load was spread.
func TestRoutingSticksSpreadsAndSurvivesAFailingServer(t *testing.T) {
	tk := domainTokens(t)
	var urls []string
	for s := range 3 {
		hs, _ := fakeServer(t, tk, func(n int, _ map[string]any) (int, string) {
			if s == 2 && n > 6 {
				return 500, ""
			}
			return 200, "<think>x</think><answer>Up || Left</answer>"
		})
		urls = append(urls, hs.URL)
	}
	var llms []LLM
	for _, u := range urls {
		c, err := NewClient(ClientOptions{BaseURL: u, Retries: 1})
		if err != nil {
			t.Fatal(err)
		}
		llms = append(llms, c)
	}
	router, err := NewRouter(urls, llms)
	if err != nil {
		t.Fatal(err)
	}
	var published []*bus.Trajectory
	var pmu sync.Mutex
	stats, err := RunWorkers(context.Background(), WorkerOptions{
		Run: "route", Worker: "w1", Workers: 6, Groups: 8, GroupSize: 4,
		Episode: EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 3},
		NewEnv:  func() (envs.Env, error) { return envs.New("frozenlake", "") },
		Router:  router, Tokens: tk,
		Publish: func(_ context.Context, tr *bus.Trajectory) error {
			pmu.Lock()
			published = append(published, tr)
			pmu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(published) != 32 || stats.Episodes != 32 || stats.Failed != 0 {
		t.Fatalf("published %d, stats %+v", len(published), stats)
	}
	ids := map[string]bool{}
	for _, tr := range published {
		if ids[tr.ID] {
			t.Errorf("trajectory %s published twice", tr.ID)
		}
		ids[tr.ID] = true
	}
	// Stickiness is checked directly in TestStickyEpisodes; here, that load spread and the
	// failing server was noticed.
	st := router.Stats()
	t.Logf("servers: %+v; restarts %d", st, stats.Restarts)
	for i := range 2 {
		if st[i].Episodes == 0 {
			t.Errorf("server %d got no episodes", i)
		}
	}
	if st[2].Failures == 0 || stats.Restarts == 0 {
		t.Errorf("the failing server was not noticed: %+v, restarts %d", st[2], stats.Restarts)
	}
	// Groups share seeds.
	seeds := map[string]int64{}
	for _, tr := range published {
		if s, ok := seeds[tr.Group]; ok && s != tr.Seed {
			t.Errorf("group %s has seeds %d and %d", tr.Group, s, tr.Seed)
		}
		seeds[tr.Group] = tr.Seed
	}
	if len(seeds) != 8 {
		t.Errorf("%d groups", len(seeds))
	}
}

// TestStickyEpisodes checks directly that one episode's turns all reach one server.
func TestStickyEpisodes(t *testing.T) {
	tk := domainTokens(t)
	counts := make([]int, 3)
	var mu sync.Mutex
	var llms []LLM
	var names []string
	for s := range 3 {
		names = append(names, fmt.Sprint("s", s))
		llms = append(llms, countingLLM{inner: &scripted{responses: []string{"<think>x</think><answer>Up</answer>"}, tok: tk.Tok}, n: &counts[s], mu: &mu})
	}
	router, _ := NewRouter(names, llms)
	llm, _ := router.Episode()
	env, _ := envs.New("sokoban", "")
	tr, err := Play(context.Background(), env, llm, tk, EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 4, Run: "r", ID: "x", Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	nonzero := 0
	for _, c := range counts {
		if c > 0 {
			nonzero++
			if c != len(tr.Turns) {
				t.Errorf("a server got %d of %d turns", c, len(tr.Turns))
			}
		}
	}
	if nonzero != 1 {
		t.Errorf("turns went to %d servers: %v", nonzero, counts)
	}
}

type countingLLM struct {
	inner LLM
	n     *int
	mu    *sync.Mutex
}

func (c countingLLM) Generate(ctx context.Context, req GenRequest) (GenResponse, error) {
	c.mu.Lock()
	*c.n++
	c.mu.Unlock()
	return c.inner.Generate(ctx, req)
}

// modelRecorder answers instantly and records the model each request named.
type modelRecorder struct {
	inner  LLM
	mu     sync.Mutex
	models map[string]int
	delay  time.Duration
}

func (m *modelRecorder) Generate(ctx context.Context, req GenRequest) (GenResponse, error) {
	m.mu.Lock()
	m.models[req.Model]++
	m.mu.Unlock()
	if m.delay > 0 {
		time.Sleep(m.delay)
	}
	resp, err := m.inner.Generate(ctx, req)
	resp.Model = req.Model
	return resp, err
}

func TestPolicySwapAndGracefulDrain(t *testing.T) {
	tk := domainTokens(t)
	rec := &modelRecorder{inner: NewInstantLLM("<think>x</think><answer>Up</answer>", tk), models: map[string]int{}, delay: 20 * time.Millisecond}
	router, _ := NewRouter([]string{"r"}, []LLM{rec})
	policy := make(chan bus.Policy, 1)
	policy <- bus.Policy{Version: 4, Model: "spa-v4"}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var published []*bus.Trajectory
	done := make(chan WorkerStats)
	go func() {
		stats, err := RunWorkers(ctx, WorkerOptions{
			Run: "swap", Worker: "w", Workers: 4, GroupSize: 2, Router: router, Tokens: tk, Policy: policy,
			Episode: EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 5, Model: "spa-v0"},
			NewEnv:  func() (envs.Env, error) { return envs.New("sokoban", "") },
			Publish: func(_ context.Context, tr *bus.Trajectory) error {
				mu.Lock()
				published = append(published, tr)
				mu.Unlock()
				return nil
			},
		})
		if err != nil {
			t.Error(err)
		}
		done <- stats
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	stats := <-done
	mu.Lock()
	defer mu.Unlock()
	if stats.Failed != 0 || int(stats.Episodes) != len(published) || len(published) == 0 {
		t.Fatalf("stats %+v, published %d", stats, len(published))
	}
	// Every episode in flight at the cancel finished all its turns and was published.
	for _, tr := range published {
		if !tr.Turns[len(tr.Turns)-1].Done {
			t.Errorf("trajectory %s was cut short", tr.ID)
		}
		if tr.Model != "spa-v4" && tr.Model != "spa-v0" {
			t.Errorf("model %q", tr.Model)
		}
	}
	if rec.models["spa-v4"] == 0 {
		t.Errorf("the policy update was not used: %v", rec.models)
	}
}

// TestVersionFromThePolicyKVUnderOneServedName: a server that reloads weights under one name
// (vLLM full reload, SGLang) answers as "spa"; the trajectory takes its version from the KV.
// Ids carry the worker's incarnation, so a restarted worker cannot collide with its predecessor.
func TestVersionFromThePolicyKVUnderOneServedName(t *testing.T) {
	tk := domainTokens(t)
	rec := &modelRecorder{inner: NewInstantLLM("<think>x</think><answer>Up</answer>", tk), models: map[string]int{}}
	router, _ := NewRouter([]string{"r"}, []LLM{rec})
	policy := make(chan bus.Policy, 1)
	policy <- bus.Policy{Version: 7, Model: "spa"}
	var published []*bus.Trajectory
	_, err := RunWorkers(context.Background(), WorkerOptions{
		Run: "one", Worker: "w", Incarnation: "a1b2c3", Workers: 1, Groups: 1, GroupSize: 2, Router: router, Tokens: tk,
		Episode: EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 2, Model: "spa", Version: 7},
		NewEnv:  func() (envs.Env, error) { return envs.New("sokoban", "") },
		Publish: func(_ context.Context, tr *bus.Trajectory) error { published = append(published, tr); return nil },
		Policy:  policy,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range published {
		if tr.PolicyVersion != 7 || tr.Model != "spa" || !strings.HasPrefix(tr.ID, "one-w-a1b2c3-g0-") || tr.Group != "one-w-a1b2c3-g0" {
			t.Errorf("trajectory %s (group %s): model %q version %d", tr.ID, tr.Group, tr.Model, tr.PolicyVersion)
		}
	}
	if len(published) != 2 {
		t.Fatalf("%d published", len(published))
	}
	// A name with a version wins over the KV.
	for name, want := range map[string]int64{"spa-v12": 12, "my-run-v3": 3, "spa": -1, "spa-v": -1, "my-vx1": -1, "-v3": -1, "spa-v1x": -1} {
		_, n, ok := bus.ParseVersionName(name)
		if (ok && n != want) || ok != (want >= 0) {
			t.Errorf("ParseVersionName(%q) = %d, %v", name, n, ok)
		}
		if ok && bus.VersionName(strings.TrimSuffix(name, fmt.Sprint("-v", n)), n) != name {
			t.Errorf("%q does not round-trip", name)
		}
	}
}

// refusing answers every request with the error a wrong API key produces.
type refusing struct{ calls *atomic.Int64 }

func (r refusing) Generate(context.Context, GenRequest) (GenResponse, error) {
	r.calls.Add(1)
	return GenResponse{}, fmt.Errorf("http://x/v1: %w (401)", ErrUnauthorized)
}

// TestRefusedKeyStopsThePool: a pool told to play forever stops at once when the server refuses
// its key, without backing the server off or failing every episode in turn.
func TestRefusedKeyStopsThePool(t *testing.T) {
	tk := domainTokens(t)
	var calls atomic.Int64
	router, _ := NewRouter([]string{"r"}, []LLM{refusing{&calls}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stats, err := RunWorkers(ctx, WorkerOptions{
		Run: "auth", Worker: "w", Workers: 2, GroupSize: 2, Router: router, Tokens: tk,
		Episode: EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 2},
		NewEnv:  func() (envs.Env, error) { return envs.New("sokoban", "") },
		Publish: func(context.Context, *bus.Trajectory) error { return nil },
	})
	if !errors.Is(err, ErrUnauthorized) || ctx.Err() != nil {
		t.Fatalf("err %v (ctx %v)", err, ctx.Err())
	}
	if stats.Failed > 4 || calls.Load() > 4 {
		t.Errorf("kept going after the refusal: %+v, %d calls", stats, calls.Load())
	}
}

// TestWorkerSeedBase: each worker name has its own range of a million seeds, the same on every
// restart, and the run seed moves all of them.
func TestWorkerSeedBase(t *testing.T) {
	seen := map[int64]string{}
	for _, w := range []string{"w0", "w1", "host-a-1", "host-b-1"} {
		base := WorkerSeedBase(7, w)
		if base != WorkerSeedBase(7, w) || base%(1<<20) != 7*1_000_003%(1<<20) {
			t.Errorf("%s: base %d", w, base)
		}
		for b, other := range seen {
			if d := b - base; d > -(1<<20) && d < 1<<20 {
				t.Errorf("%s and %s share a range: %d, %d", w, other, base, b)
			}
		}
		seen[base] = w
	}
	if WorkerSeedBase(8, "w0") == WorkerSeedBase(7, "w0") {
		t.Error("the run seed does not move the base")
	}
}
