package api

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/model/sample"
)

// fakeGen is a generator without a model, for testing the HTTP layer alone. Its "model" gives
// each position logits that are a fixed function of the tokens so far, and it samples them with
// the engine's own sampler (model/sample), so requests are reproducible by seed, temperature 0 is
// greedy, and logprobs and top_logprobs come from one distribution, as the engine's do. Submit
// applies the engine's checks and returns gen's errors; versions load from any directory with a
// config.json; Pause holds sequences in the queue.
type fakeGen struct {
	name       string
	vocab      int
	maxLen     int
	maxWaiting int
	// delay is the time between tokens, so a generation can outlast a client's patience.
	delay time.Duration

	mu       sync.Mutex
	versions []gen.VersionInfo // oldest first; the last is the latest
	paused   bool
	resumed  *sync.Cond
	stats    gen.Stats
}

func newFakeGen(name string, vocab int) *fakeGen {
	g := &fakeGen{name: name, vocab: vocab, maxLen: 192, maxWaiting: 4096}
	g.resumed = sync.NewCond(&g.mu)
	g.versions = []gen.VersionInfo{{Name: name + "-v0", Dir: "/ckpt/v0", Loaded: time.Now(), Latest: true, Slots: 8}}
	return g
}

func (g *fakeGen) Name() string     { return g.name }
func (g *fakeGen) MaxModelLen() int { return g.maxLen }

func (g *fakeGen) QueueRoom() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxWaiting - int(g.stats.Waiting)
}

func (g *fakeGen) Versions() []gen.VersionInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gen.VersionInfo(nil), g.versions...)
}

func (g *fakeGen) CheckVersion(name string, number int64) error {
	return gen.CheckVersion(g.name, name, number)
}

func (g *fakeGen) LoadVersion(ctx context.Context, name string, number int64, dir string) error {
	if err := g.CheckVersion(name, number); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		return fmt.Errorf("load version %s from %s: %w", name, dir, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range g.versions {
		g.versions[i].Latest = false
	}
	g.versions = append(g.versions, gen.VersionInfo{Name: name, Number: number, Dir: dir, Loaded: time.Now(), Latest: true, Slots: 8})
	if len(g.versions) > 2 {
		g.versions = g.versions[len(g.versions)-2:]
	}
	return nil
}

func (g *fakeGen) Pause() {
	g.mu.Lock()
	g.paused = true
	g.mu.Unlock()
}

func (g *fakeGen) Resume() {
	g.mu.Lock()
	g.paused = false
	g.mu.Unlock()
	g.resumed.Broadcast()
}

func (g *fakeGen) Stats() gen.Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

func (g *fakeGen) resolve(name string) (string, error) {
	if name == "" || name == g.name {
		return g.versions[len(g.versions)-1].Name, nil
	}
	var names []string
	for _, v := range g.versions {
		if v.Name == name {
			return name, nil
		}
		names = append(names, v.Name)
	}
	sort.Strings(names)
	return "", fmt.Errorf("%w %q (serving %v, and %s for the latest)", gen.ErrUnknownModel, name, names, g.name)
}

func (g *fakeGen) Submit(ctx context.Context, req gen.Request) (<-chan gen.Event, error) {
	req, err := gen.CheckRequest(req, g.maxLen)
	if err != nil {
		return nil, err
	}
	if err := gen.CheckPromptIDs(req.Prompt, g.vocab); err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if int(g.stats.Waiting) >= g.maxWaiting {
		return nil, fmt.Errorf("%w: %d sequences are waiting for a slot, the limit (server.max_waiting) is %d", gen.ErrQueueFull, g.stats.Waiting, g.maxWaiting)
	}
	version, err := g.resolve(req.Model)
	if err != nil {
		return nil, err
	}
	g.stats.Requests++
	g.stats.Waiting++
	out := make(chan gen.Event, req.MaxTokens+2)
	go g.generate(ctx, req, version, out)
	return out, nil
}

// generate waits out a pause, then emits the sequence's tokens.
func (g *fakeGen) generate(ctx context.Context, req gen.Request, version string, out chan<- gen.Event) {
	defer close(out)
	submitted := time.Now()
	g.mu.Lock()
	for g.paused {
		g.resumed.Wait()
	}
	g.stats.Waiting--
	g.stats.Running++
	g.stats.PromptTokens += int64(len(req.Prompt))
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.stats.Running--
		g.mu.Unlock()
	}()
	stops := map[int]bool{}
	for _, id := range req.StopTokenIDs {
		stops[id] = true
	}
	s := sample.New(req.Seed)
	state := fnv.New64a()
	for _, id := range req.Prompt {
		fmt.Fprint(state, id, ",")
	}
	h := state.Sum64()
	for n := 1; ; n++ {
		if ctx.Err() != nil {
			g.mu.Lock()
			g.stats.Aborted++
			g.mu.Unlock()
			out <- gen.Event{FinishReason: gen.FinishAbort, StopToken: -1, Version: version, Err: ctx.Err()}
			return
		}
		time.Sleep(g.delay)
		logits := g.logits(h)
		id, lp := s.Sample(logits, req.Sampling)
		tok := &gen.Token{ID: id, Logprob: lp}
		if req.TopLogprobs > 0 {
			tok.TopIDs, tok.TopLPs = sample.TopLogProbs(logits, req.TopLogprobs, req.Sampling.Temperature)
		}
		h = (h ^ uint64(id+1)) * 1099511628211 // FNV-1a's step, over token ids
		ev := gen.Event{Token: tok, StopToken: -1, Version: version}
		switch {
		case stops[id]:
			ev.FinishReason, ev.StopToken = gen.FinishStop, id
		case n >= req.MaxTokens:
			ev.FinishReason = gen.FinishLength
		}
		g.mu.Lock()
		g.stats.GeneratedTokens++
		if n == 1 {
			g.stats.FirstTokens++
			g.stats.FirstTokenTime += time.Since(submitted)
		}
		g.mu.Unlock()
		out <- ev
		if ev.FinishReason != "" {
			return
		}
	}
}

// logits is the fake model: a fixed pseudo-random function of h, a hash of the tokens so far.
func (g *fakeGen) logits(h uint64) []float32 {
	base := float64(h%1000) / 100
	out := make([]float32, g.vocab)
	for j := range out {
		out[j] = float32(3 * math.Sin(base+float64(j)*0.7))
	}
	return out
}
