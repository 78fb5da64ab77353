package inference

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/sample"
	"github.com/spa-rl/spa/torchrt"
)

func TestMain(m *testing.M) { torchrt.RunTests(m) }

func testConfig() model.Config {
	return model.Config{
		Architectures: []string{"Qwen2ForCausalLM"}, ModelType: "qwen2", VocabSize: 97, HiddenSize: 32,
		IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		MaxPositionEmbeddings: 256, RopeTheta: 10000, RMSNormEps: 1e-6, HiddenAct: "silu",
		InitializerRange: 0.5, TieWordEmbeddings: true, EOSTokenID: model.IDList{96},
	}
}

// writeCheckpoint saves a random model and returns its directory.
func writeCheckpoint(t *testing.T, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	ex := torchrt.NewExecutor()
	defer ex.Close()
	err := ex.Do(context.Background(), func() error {
		m, err := model.New(testConfig(), model.Options{Seed: seed})
		if err != nil {
			return err
		}
		defer m.Close()
		return model.Save(dir, m, model.SaveOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// referenceGreedy generates greedily by recomputing the whole sequence each step, with the model
// package alone: what the engine must reproduce whatever else it batches.
func referenceGreedy(t *testing.T, dir string, prompt []int, n int) []int {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m, err := model.Load(dir, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	seqTokens := append([]int(nil), prompt...)
	var out []int
	ts.NoGrad(func() {
		for range n {
			valid := make([]bool, len(seqTokens))
			for i := range valid {
				valid[i] = true
			}
			in, err := model.MakeInputs([][]int{seqTokens}, [][]bool{valid}, gotch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			h, _ := m.Forward(in, nil)
			in.Drop()
			lg := m.Logits(h)
			h.MustDrop()
			last := lg.MustNarrow(1, int64(len(seqTokens)-1), 1, true).MustView([]int64{-1}, true)
			vals := last.Float64Values(true)
			best := 0
			for i, x := range vals {
				if x > vals[best] {
					best = i
				}
			}
			out = append(out, best)
			seqTokens = append(seqTokens, best)
		}
	})
	return out
}

func collect(t *testing.T, ch <-chan gen.Event) ([]int, gen.Event) {
	t.Helper()
	var toks []int
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("channel closed without a finish event")
			}
			if ev.Token != nil {
				toks = append(toks, ev.Token.ID)
			}
			if ev.FinishReason != "" {
				return toks, ev
			}
		case <-timeout:
			t.Fatal("no finish within 60s")
		}
	}
}

// TestContinuousBatchingMatchesOneAtATime runs many greedy requests of different lengths at once
// (they join and leave the batch at different steps) and compares each with recomputation alone.
func TestContinuousBatchingMatchesOneAtATime(t *testing.T) {
	dir := writeCheckpoint(t, 1)
	e := New(Options{MaxBatch: 5, MaxModelLen: 128, KVCacheMB: 64})
	defer e.Close()
	if err := e.LoadVersion(context.Background(), "v1", 1, dir); err != nil {
		t.Fatal(err)
	}
	type job struct {
		prompt []int
		n      int
	}
	var jobs []job
	for i := range 12 {
		p := make([]int, 3+i%7)
		for j := range p {
			p[j] = (i*13 + j*7) % 90
		}
		jobs = append(jobs, job{p, 4 + (i*5)%9})
	}
	results := make([][]int, len(jobs))
	var wg sync.WaitGroup
	for i, jb := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, err := e.Submit(context.Background(), gen.Request{Prompt: jb.prompt, MaxTokens: jb.n})
			if err != nil {
				t.Error(err)
				return
			}
			toks, ev := collect(t, ch)
			if ev.FinishReason != gen.FinishLength && ev.FinishReason != gen.FinishStop {
				t.Errorf("job %d finished with %q (%v)", i, ev.FinishReason, ev.Err)
			}
			results[i] = toks
		}()
	}
	wg.Wait()
	// The counters /metrics reports add up to what the requests saw.
	generated, prompts := 0, 0
	for i, jb := range jobs {
		generated += len(results[i])
		prompts += len(jb.prompt)
	}
	// The running gauge drops when the loop retires a slot, just after the last event is sent.
	st := e.Stats()
	for deadline := time.Now().Add(10 * time.Second); st.Running != 0 && time.Now().Before(deadline); st = e.Stats() {
		time.Sleep(time.Millisecond)
	}
	if st.Requests != int64(len(jobs)) || st.GeneratedTokens != int64(generated) || st.FirstTokens != int64(len(jobs)) ||
		st.PromptTokens+st.ReusedTokens != int64(prompts) || st.Running != 0 || st.Waiting != 0 || st.Aborted != 0 {
		t.Errorf("stats %+v after %d requests of %d prompt tokens that generated %d", st, len(jobs), prompts, generated)
	}
	for i, jb := range jobs {
		want := referenceGreedy(t, dir, jb.prompt, jb.n)
		got := results[i]
		// A sampled EOS ends the engine's sequence early; compare what it produced.
		if len(got) == 0 || len(got) > len(want) {
			t.Fatalf("job %d: %d tokens, reference %d", i, len(got), len(want))
		}
		for k := range got {
			if got[k] != want[k] {
				t.Fatalf("job %d token %d: engine %v, reference %v", i, k, got, want)
			}
		}
	}
}

func TestSeededSamplingIsReproducible(t *testing.T) {
	dir := writeCheckpoint(t, 2)
	e := New(Options{MaxBatch: 4, MaxModelLen: 64, KVCacheMB: 16})
	defer e.Close()
	if err := e.LoadVersion(context.Background(), "v1", 1, dir); err != nil {
		t.Fatal(err)
	}
	run := func(seed uint64) []int {
		ch, err := e.Submit(context.Background(), gen.Request{Prompt: []int{1, 2, 3}, MaxTokens: 20, Seed: seed, Sampling: sample.Params{Temperature: 1}})
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := collect(t, ch)
		return toks
	}
	a, b, c := run(5), run(5), run(6)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("same seed, different tokens: %v %v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Errorf("different seeds gave the same 20 tokens: %v", a)
	}
}

// TestPrefixCacheReusesTurnsExactly plays a three-turn conversation twice, with and without the
// prefix cache: the tokens must be identical, and the cached run must reuse the earlier turns.
func TestPrefixCacheReusesTurnsExactly(t *testing.T) {
	dir := writeCheckpoint(t, 4)
	play := func(prefixMB int, salt string) ([]int, *Engine) {
		e := New(Options{MaxBatch: 2, MaxModelLen: 200, KVCacheMB: 16, PrefixCacheMB: prefixMB})
		if err := e.LoadVersion(context.Background(), "v1", 1, dir); err != nil {
			t.Fatal(err)
		}
		history := []int{}
		for turn := range 3 {
			for i := range 23 {
				history = append(history, (turn*31+i*7)%90)
			}
			ch, err := e.Submit(context.Background(), gen.Request{Prompt: history, MaxTokens: 17, CacheSalt: salt})
			if err != nil {
				t.Fatal(err)
			}
			toks, _ := collect(t, ch)
			history = append(history, toks...)
		}
		return history, e
	}
	plain, e0 := play(-1, "")
	defer e0.Close()
	cached, e1 := play(8, "episode-1")
	defer e1.Close()
	if fmt.Sprint(plain) != fmt.Sprint(cached) {
		t.Fatalf("prefix caching changed the tokens:\n%v\n%v", plain, cached)
	}
	lookups, hits, reused := e1.stats.prefixLookups.Load(), e1.stats.prefixHits.Load(), e1.stats.reused.Load()
	t.Logf("prefix cache: %d lookups, %d hits, %d prompt tokens reused of %d", lookups, hits, reused, e1.stats.prompts.Load()+reused)
	if hits != 2 || reused < 2*prefixBlock {
		t.Errorf("turns 2 and 3 should hit the cache: %d hits, %d tokens reused", hits, reused)
	}
	if e0.stats.prefixHits.Load() != 0 {
		t.Error("a disabled prefix cache hit")
	}
	// Another salt shares nothing.
	ch, _ := e1.Submit(context.Background(), gen.Request{Prompt: cached[:60], MaxTokens: 2, CacheSalt: "episode-2"})
	collect(t, ch)
	if e1.stats.prefixHits.Load() != hits {
		t.Error("a different cache_salt reused another salt's entry")
	}
}

func TestCancelPauseAndVersionEviction(t *testing.T) {
	dir := writeCheckpoint(t, 5)
	e := New(Options{Name: "p", MaxBatch: 4, MaxModelLen: 200, KVCacheMB: 16, MaxVersions: 2})
	defer e.Close()
	ctx := context.Background()
	if err := e.LoadVersion(ctx, "p-v0", 0, dir); err != nil {
		t.Fatal(err)
	}
	// A client that goes away aborts its sequence at the next token boundary.
	cctx, cancel := context.WithCancel(ctx)
	ch, err := e.Submit(cctx, gen.Request{Prompt: []int{1, 2, 3}, MaxTokens: 150})
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	cancel()
	toks, ev := collect(t, ch)
	if ev.FinishReason != gen.FinishAbort || len(toks) >= 149 {
		t.Errorf("cancelled request: %q after %d more tokens", ev.FinishReason, len(toks))
	}
	// Paused: requests queue and nothing is generated; resumed: they complete.
	e.Pause()
	before := e.Generated()
	ch, _ = e.Submit(ctx, gen.Request{Prompt: []int{4, 5}, MaxTokens: 3})
	time.Sleep(100 * time.Millisecond)
	if e.Generated() != before || !e.Paused() {
		t.Error("tokens generated while paused")
	}
	e.Resume()
	if _, ev := collect(t, ch); ev.FinishReason != gen.FinishLength {
		t.Errorf("after resume: %q", ev.FinishReason)
	}
	// A third version evicts the oldest idle one; the served name follows the latest.
	for i, name := range []string{"p-v1", "p-v2"} {
		if err := e.LoadVersion(ctx, name, int64(i+1), dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.LoadVersion(ctx, "p-v2", 3, dir); err == nil {
		t.Error("a version name loaded twice")
	}
	// The same version again (a resumed learner re-sending it) is a no-op.
	if err := e.LoadVersion(ctx, "p-v2", 2, dir); err != nil {
		t.Errorf("the same version again: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.Versions()) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var names []string
	for _, v := range e.Versions() {
		names = append(names, v.Name)
	}
	if fmt.Sprint(names) != "[p-v1 p-v2]" {
		t.Errorf("versions after eviction: %v", names)
	}
	if _, err := e.Submit(ctx, gen.Request{Model: "p-v0", Prompt: []int{1}}); err == nil || !errors.Is(err, gen.ErrUnknownModel) {
		t.Errorf("evicted version: %v", err)
	}
	if name, _ := e.Resolve("p"); name != "p-v2" {
		t.Errorf("served name resolves to %q", name)
	}
	for _, bad := range []gen.Request{{Prompt: nil}, {Prompt: make([]int, 200)}, {Prompt: []int{1}, MaxTokens: 500}, {Prompt: []int{1000}}} {
		if _, err := e.Submit(ctx, bad); err == nil {
			t.Errorf("submitted %d tokens, max %d, first %v", len(bad.Prompt), bad.MaxTokens, bad.Prompt)
		}
	}
}

func TestPrefixCacheEvictsUnderBudget(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	perTok := int64(100)
	c := newPrefixCache(50*perTok, perTok) // room for 50 tokens: three 16-token entries
	mk := func(n int) ([]*ts.Tensor, []*ts.Tensor) {
		return []*ts.Tensor{ts.MustZeros([]int64{int64(n), 2}, gotch.Float, gotch.CPU)}, []*ts.Tensor{ts.MustZeros([]int64{int64(n), 2}, gotch.Float, gotch.CPU)}
	}
	seqOf := func(x int) []int {
		s := make([]int, 20)
		for i := range s {
			s[i] = x
		}
		return s
	}
	for x := range 4 {
		c.store("", seqOf(x), mk)
	}
	if c.lru.Len() != 3 || c.used > c.budget {
		t.Fatalf("%d entries, %d of %d bytes", c.lru.Len(), c.used, c.budget)
	}
	if c.lookup("", seqOf(0)) != nil {
		t.Error("the least recently used entry survived")
	}
	if c.lookup("", seqOf(3)) == nil || c.lookup("salt", seqOf(3)) != nil {
		t.Error("lookup by salt is wrong")
	}
	c.drop()
	if c.used != 0 {
		t.Errorf("%d bytes after drop", c.used)
	}
}

// TestVersionsWhileGenerating reads the version table, as /metrics does, while the loop admits and
// retires sequences: the counts stay within the slots and end at zero. Under go test -race it also
// checks that the table is read without racing the loop (it used to read the loop's slice).
func TestVersionsWhileGenerating(t *testing.T) {
	dir := writeCheckpoint(t, 9)
	e := New(Options{Name: "p", MaxBatch: 4, MaxModelLen: 64, KVCacheMB: 16, MaxVersions: 2})
	defer e.Close()
	ctx := context.Background()
	if err := e.LoadVersion(ctx, "p-v0", 0, dir); err != nil {
		t.Fatal(err)
	}
	var chans []<-chan gen.Event
	for i := range 12 {
		ch, err := e.Submit(ctx, gen.Request{Prompt: []int{1, 2, 3 + i}, MaxTokens: 8 + i})
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	maxRunning := 0
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, v := range e.Versions() {
				if v.Running > v.Slots || v.Running < 0 {
					t.Errorf("running %d of %d slots", v.Running, v.Slots)
				}
				maxRunning = max(maxRunning, v.Running)
			}
		}
	}()
	for _, ch := range chans {
		collect(t, ch)
	}
	close(stop)
	<-done
	// A sequence's last event goes out just before the loop frees its slot.
	deadline := time.Now().Add(5 * time.Second)
	for e.Versions()[0].Running != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if v := e.Versions(); len(v) != 1 || v[0].Running != 0 || v[0].Waiting != 0 {
		t.Errorf("after every request finished: %+v", v)
	}
	if maxRunning == 0 {
		t.Error("never saw a running sequence")
	}
	t.Logf("at most %d running seen", maxRunning)
}
