// Package inference serves the policy model: an engine with continuous batching over a slot KV
// cache, several policy versions at once and hot weight reloads, and an HTTP layer that speaks the
// OpenAI API as vLLM serves it. The engine knows nothing of HTTP and the HTTP layer nothing of
// tensors; all torch work runs on one locked OS thread.
package inference

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/sample"
	"github.com/spa-rl/spa/torchrt"
)

// Options size the engine.
type Options struct {
	// Name is what clients call the latest version ("model" in requests); each loaded version
	// also answers to its own name.
	Name string
	// MaxBatch bounds the sequences decoded together per version; zero means 64.
	MaxBatch int
	// MaxModelLen bounds prompt plus completion, in tokens; zero means 2048.
	MaxModelLen int
	// KVCacheMB is the KV-cache memory per version; it caps MaxBatch at what fits. Zero means 1024.
	KVCacheMB int
	// MaxVersions is how many versions stay loaded; loading one more evicts the oldest idle one.
	// Zero means 2.
	MaxVersions int
	// PrefixCacheMB is the memory per version for reusing the keys and values of prompts that
	// start like earlier sequences; zero means a quarter of KVCacheMB, negative disables it.
	PrefixCacheMB int
	// Device runs the models; the zero value is the CPU.
	Device gotch.Device
	// MaxWaiting bounds the sequences queued for a slot, across versions; Submit past it fails
	// with ErrQueueFull. Zero means 4096.
	MaxWaiting int
	// LoadTimeout bounds reading a checkpoint from disk; a load past it fails without holding up
	// the next one. Zero means 5 minutes.
	LoadTimeout time.Duration
}

// Request is one sequence to generate. The HTTP layer turns n > 1 into n requests.
type Request struct {
	// Model names a version, or Options.Name (or "") for the latest.
	Model    string
	Prompt   []int
	Sampling sample.Params
	Seed     uint64
	// MaxTokens bounds the completion; zero means up to MaxModelLen.
	MaxTokens int
	// StopTokenIDs end the sequence when sampled (the token is part of the output).
	StopTokenIDs []int
	// TopLogprobs asks for the n most likely alternatives at each position.
	TopLogprobs int
	// CacheSalt isolates prefix-cache entries: only requests with the same salt share them.
	CacheSalt string
}

// Token is one generated token.
type Token struct {
	ID      int
	Logprob float64
	TopIDs  []int
	TopLPs  []float64
}

// Finish reasons, as the OpenAI API names them.
const (
	FinishStop   = "stop"
	FinishLength = "length"
	FinishAbort  = "abort"
)

// Event is what a request's channel carries: tokens, then a last event with FinishReason set.
type Event struct {
	Token        *Token
	FinishReason string
	// StopToken is the stop token id that ended the sequence, or -1.
	StopToken int
	// Version is the version that generated the sequence.
	Version string
	Err     error
}

// Errors from Submit.
var (
	ErrUnknownModel  = errors.New("unknown model")
	ErrPromptTooLong = errors.New("prompt too long")
	ErrClosed        = errors.New("engine closed")
	ErrQueueFull     = errors.New("queue full")
	// ErrBadVersion marks a version name or number LoadVersion refuses.
	ErrBadVersion = errors.New("bad version")
	// ErrIncompatible marks a checkpoint that cannot be served beside the loaded ones.
	ErrIncompatible = errors.New("incompatible checkpoint")
)

type seq struct {
	req       Request
	ctx       context.Context
	out       chan Event
	sampler   *sample.Sampler
	last      int // the token to feed next
	generated int
	stops     map[int]bool
	submitted time.Time
	first     bool
	all       []int // tokens whose keys and values are in the slot
}

// version is one loaded checkpoint. name, dir, number, m and loaded are set before it is
// published in Engine.versions and never change.
type version struct {
	name   string
	dir    string
	number int64
	m      *model.Model
	// cache and prefix belong to the engine loop.
	cache  *slotCache
	prefix *prefixCache
	// waiting is guarded by Engine.mu (Submit appends, the loop takes).
	waiting []*seq
	// running belongs to the engine loop: running[i] is in slot i. Other goroutines read its
	// length through nRunning.
	running  []*seq
	nRunning atomic.Int64
	// draining is guarded by Engine.mu.
	draining bool
	loaded   time.Time
}

// Engine schedules generation. Its methods are safe for concurrent use.
type Engine struct {
	opts   Options
	loader *torchrt.Executor

	mu       sync.Mutex
	versions map[string]*version
	latest   string
	paused   bool
	closed   bool
	wake     chan struct{}
	done     chan struct{}

	stats stats
}

type stats struct {
	generated, prompts, requests, aborted atomic.Int64
	running, waiting                      atomic.Int64
	prefixLookups, prefixHits, reused     atomic.Int64
	ttftCount                             atomic.Int64
	ttftNanos                             atomic.Int64
}

// New starts an engine with no versions loaded; LoadVersion adds them.
func New(opts Options) *Engine {
	if opts.Name == "" {
		opts.Name = "spa"
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 64
	}
	if opts.MaxModelLen <= 0 {
		opts.MaxModelLen = 2048
	}
	if opts.KVCacheMB <= 0 {
		opts.KVCacheMB = 1024
	}
	if opts.MaxVersions <= 0 {
		opts.MaxVersions = 2
	}
	if opts.PrefixCacheMB == 0 {
		opts.PrefixCacheMB = opts.KVCacheMB / 4
	}
	if opts.Device.Name == "" {
		opts.Device = gotch.CPU
	}
	if opts.MaxWaiting <= 0 {
		opts.MaxWaiting = 4096
	}
	if opts.LoadTimeout <= 0 {
		opts.LoadTimeout = 5 * time.Minute
	}
	e := &Engine{opts: opts, loader: torchrt.NewExecutor(), versions: map[string]*version{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go e.loop()
	return e
}

// Name is the served name of the latest version.
func (e *Engine) Name() string { return e.opts.Name }

// MaxModelLen is the longest prompt plus completion.
func (e *Engine) MaxModelLen() int { return e.opts.MaxModelLen }

// QueueRoom is how many more sequences may queue before Submit refuses them with ErrQueueFull.
func (e *Engine) QueueRoom() int { return e.opts.MaxWaiting - int(e.stats.waiting.Load()) }

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// VersionInfo describes a loaded version.
type VersionInfo struct {
	Name     string    `json:"name"`
	Number   int64     `json:"number"`
	Dir      string    `json:"dir"`
	Loaded   time.Time `json:"loaded"`
	Latest   bool      `json:"latest"`
	Running  int       `json:"running"`
	Waiting  int       `json:"waiting"`
	Slots    int       `json:"slots"`
	Draining bool      `json:"draining"`
}

// Versions lists loaded versions, oldest first.
func (e *Engine) Versions() []VersionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []VersionInfo
	for _, v := range e.versions {
		out = append(out, VersionInfo{Name: v.name, Number: v.number, Dir: v.dir, Loaded: v.loaded, Latest: v.name == e.latest,
			Running: int(v.nRunning.Load()), Waiting: len(v.waiting), Slots: v.cache.slots, Draining: v.draining})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Loaded.Before(out[j].Loaded) })
	return out
}

// LoadVersion loads a checkpoint as version name (number orders versions) and makes it the
// latest. Serving goes on while it loads; requests already running keep the weights they started
// with. The oldest idle version beyond MaxVersions is evicted; a busy one stops taking requests
// and is freed when its last sequence ends.
func (e *Engine) LoadVersion(ctx context.Context, name string, number int64, dir string) error {
	if err := e.CheckVersion(name, number); err != nil {
		return err
	}
	// Loading the same checkpoint under the same name again is a no-op, so that a resumed
	// learner can re-send the version it resumes from without knowing whether it arrived.
	e.mu.Lock()
	if old, ok := e.versions[name]; ok && old.dir == dir && old.number == number && !old.draining {
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	ck, err := e.read(ctx, dir)
	if err != nil {
		return fmt.Errorf("load version %s from %s: %w", name, dir, err)
	}
	if err := e.compatible(ck.Config); err != nil {
		return fmt.Errorf("load version %s from %s: %w", name, dir, err)
	}
	var v *version
	err = e.loader.Do(ctx, func() error {
		m, err := model.FromCheckpoint(ck, model.Options{Device: e.opts.Device})
		if err != nil {
			return err
		}
		per := bytesPerSlot(m.Config, e.opts.MaxModelLen)
		slots := min(e.opts.MaxBatch, int(int64(e.opts.KVCacheMB)<<20/per))
		if slots < 1 {
			m.Close()
			return fmt.Errorf("kv_cache_mb %d holds no sequence of %d tokens (one needs %d MiB); raise server.kv_cache_mb or lower server.max_model_len", e.opts.KVCacheMB, e.opts.MaxModelLen, per>>20+1)
		}
		if m.Config.MaxPositionEmbeddings < e.opts.MaxModelLen {
			m.Close()
			return fmt.Errorf("max_model_len %d exceeds the model's max_position_embeddings %d", e.opts.MaxModelLen, m.Config.MaxPositionEmbeddings)
		}
		v = &version{name: name, dir: dir, number: number, m: m, cache: newSlotCache(m, slots, e.opts.MaxModelLen), loaded: time.Now()}
		if e.opts.PrefixCacheMB > 0 {
			v.prefix = newPrefixCache(int64(e.opts.PrefixCacheMB)<<20, bytesPerSlot(m.Config, 1))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load version %s from %s: %w", name, dir, err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.free(v)
		return ErrClosed
	}
	if old, ok := e.versions[name]; ok {
		e.mu.Unlock()
		e.free(v)
		return fmt.Errorf("load version %s: already loaded from %s", name, old.dir)
	}
	e.versions[name] = v
	e.latest = name
	e.evictLocked()
	e.mu.Unlock()
	e.signal()
	return nil
}

// versionName is what a version may be called: it appears in URLs, metrics labels and logs.
var versionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,127}$`)

// CheckVersion reports a version name or number LoadVersion would refuse: names are 1-128
// letters, digits and ._:@+/- ("/" as in Hugging Face names), starting with a letter or digit,
// and not the served name, which always means the latest; numbers are not negative.
func (e *Engine) CheckVersion(name string, number int64) error {
	switch {
	case !versionName.MatchString(name):
		return fmt.Errorf("%w: name %q must be 1-128 letters, digits or ._:@+/- starting with a letter or digit", ErrBadVersion, name)
	case name == e.opts.Name:
		return fmt.Errorf("%w: %q is the served name, which always means the latest version; give the version its own name", ErrBadVersion, name)
	case number < 0:
		return fmt.Errorf("%w: number %d is negative", ErrBadVersion, number)
	}
	return nil
}

// readCheckpoint reads a checkpoint from disk; tests replace it to simulate a read that hangs.
var readCheckpoint = model.ReadCheckpoint

// read reads a checkpoint off the loader thread, under LoadTimeout. A read that hangs (a network
// file system, a device) fails the load and is left behind, so the next load is not held up.
func (e *Engine) read(ctx context.Context, dir string) (model.Checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.LoadTimeout)
	defer cancel()
	type result struct {
		ck  model.Checkpoint
		err error
	}
	done := make(chan result, 1)
	go func() {
		ck, err := readCheckpoint(dir)
		done <- result{ck, err}
	}()
	select {
	case r := <-done:
		return r.ck, r.err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return model.Checkpoint{}, fmt.Errorf("reading the checkpoint took longer than server.load_timeout (%s): %w", e.opts.LoadTimeout, ctx.Err())
		}
		return model.Checkpoint{}, ctx.Err()
	}
}

// compatible refuses a checkpoint whose vocabulary differs from the loaded versions': one server
// has one tokenizer, and ids it cannot decode would come back as empty text.
func (e *Engine) compatible(cfg model.Config) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, v := range e.versions {
		if v.m.Config.VocabSize != cfg.VocabSize {
			return fmt.Errorf("%w: vocab_size %d, but %s serves %d; a server serves one tokenizer", ErrIncompatible, cfg.VocabSize, v.name, v.m.Config.VocabSize)
		}
	}
	return nil
}

// evictLocked marks the oldest versions beyond the limit as draining; the loop frees them.
func (e *Engine) evictLocked() {
	var live []*version
	for _, v := range e.versions {
		if !v.draining {
			live = append(live, v)
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].loaded.Before(live[j].loaded) })
	for i := 0; len(live)-i > e.opts.MaxVersions; i++ {
		if live[i].name != e.latest {
			live[i].draining = true
		}
	}
}

// free releases a version's tensors on the loader thread.
func (e *Engine) free(v *version) {
	_ = e.loader.Do(context.Background(), func() error {
		v.prefix.drop()
		v.cache.drop()
		v.m.Close()
		return nil
	})
}

// Pause stops scheduling: running sequences keep their state and continue on Resume; new
// requests queue.
func (e *Engine) Pause() {
	e.mu.Lock()
	e.paused = true
	e.mu.Unlock()
}

// Resume continues after Pause.
func (e *Engine) Resume() {
	e.mu.Lock()
	e.paused = false
	e.mu.Unlock()
	e.signal()
}

// Paused reports whether the engine is paused.
func (e *Engine) Paused() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.paused
}

// Resolve maps a request's model name to a loaded version's name.
func (e *Engine) Resolve(name string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.resolveLocked(name)
}

func (e *Engine) resolveLocked(name string) (string, error) {
	if name == "" || name == e.opts.Name {
		if e.latest == "" {
			return "", fmt.Errorf("%w: no version is loaded yet", ErrUnknownModel)
		}
		return e.latest, nil
	}
	if v, ok := e.versions[name]; ok && !v.draining {
		return name, nil
	}
	var names []string
	for n, v := range e.versions {
		if !v.draining {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return "", fmt.Errorf("%w %q (serving %s, and %s for the latest)", ErrUnknownModel, name, fmt.Sprint(names), e.opts.Name)
}

// Submit queues a request. Events arrive on the returned channel until one has FinishReason set;
// cancelling ctx aborts the sequence at the next token boundary.
func (e *Engine) Submit(ctx context.Context, req Request) (<-chan Event, error) {
	if len(req.Prompt) == 0 {
		return nil, errors.New("empty prompt")
	}
	if err := req.Sampling.Check(); err != nil {
		return nil, err
	}
	if len(req.Prompt) >= e.opts.MaxModelLen {
		return nil, fmt.Errorf("%w: %d prompt tokens; the limit (max_model_len) is %d including at least one generated token", ErrPromptTooLong, len(req.Prompt), e.opts.MaxModelLen)
	}
	room := e.opts.MaxModelLen - len(req.Prompt)
	if req.MaxTokens <= 0 || req.MaxTokens > room {
		if req.MaxTokens > room {
			return nil, fmt.Errorf("%w: %d prompt tokens + max_tokens %d exceed max_model_len %d", ErrPromptTooLong, len(req.Prompt), req.MaxTokens, e.opts.MaxModelLen)
		}
		req.MaxTokens = room
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if w := e.stats.waiting.Load(); w >= int64(e.opts.MaxWaiting) {
		return nil, fmt.Errorf("%w: %d sequences are waiting for a slot, the limit (server.max_waiting) is %d; retry later", ErrQueueFull, w, e.opts.MaxWaiting)
	}
	name, err := e.resolveLocked(req.Model)
	if err != nil {
		return nil, err
	}
	v := e.versions[name]
	for _, id := range req.Prompt {
		if id < 0 || id >= v.m.Config.VocabSize {
			return nil, fmt.Errorf("prompt token id %d is outside the vocabulary (0..%d)", id, v.m.Config.VocabSize-1)
		}
	}
	s := &seq{
		req: req, ctx: ctx, out: make(chan Event, req.MaxTokens+2), sampler: sample.New(req.Seed),
		stops: map[int]bool{}, submitted: time.Now(), first: true,
	}
	s.req.Model = name
	for _, id := range req.StopTokenIDs {
		s.stops[id] = true
	}
	v.waiting = append(v.waiting, s)
	e.stats.requests.Add(1)
	e.stats.waiting.Add(1)
	e.signal()
	return s.out, nil
}

// Close stops the engine: queued and running sequences end with an abort, versions are freed.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.mu.Unlock()
	e.signal()
	<-e.done
	e.loader.Close()
}

// loop is the engine's goroutine: all inference runs here, on one locked OS thread.
func (e *Engine) loop() {
	runtime.LockOSThread()
	defer close(e.done)
	for {
		e.mu.Lock()
		closed, paused := e.closed, e.paused
		var vs []*version
		for _, v := range e.versions {
			vs = append(vs, v)
		}
		e.mu.Unlock()
		if closed {
			for _, v := range vs {
				e.abortAll(v)
				v.prefix.drop()
				v.cache.drop()
				v.m.Close()
			}
			return
		}
		worked := false
		if !paused {
			ts.NoGrad(func() {
				for _, v := range vs {
					if e.stepVersion(v) {
						worked = true
					}
				}
			})
		}
		if !worked {
			<-e.wake
		}
	}
}

func (e *Engine) abortAll(v *version) {
	e.mu.Lock()
	all := append(v.waiting, v.running...)
	v.waiting, v.running = nil, nil
	v.nRunning.Store(0)
	e.mu.Unlock()
	for _, s := range all {
		s.out <- Event{FinishReason: FinishAbort, StopToken: -1, Version: v.name, Err: ErrClosed}
		close(s.out)
	}
}

// stepVersion admits waiting sequences into free slots (prefilling each) and runs one decoding
// step for the running ones. It reports whether there was anything to do.
func (e *Engine) stepVersion(v *version) bool {
	worked := false
	var admitted []*seq
	for len(v.running)+len(admitted) < v.cache.slots {
		e.mu.Lock()
		if len(v.waiting) == 0 {
			e.mu.Unlock()
			break
		}
		s := v.waiting[0]
		v.waiting = v.waiting[1:]
		e.mu.Unlock()
		e.stats.waiting.Add(-1)
		worked = true
		if s.ctx.Err() != nil {
			e.finish(v, s, FinishAbort, -1)
			continue
		}
		admitted = append(admitted, s)
	}
	// Prefill in chunks whose padded size stays modest, so one long prompt does not make every
	// short one pay for its length.
	for len(admitted) > 0 {
		n := 1
		for n < len(admitted) && n < 16 && len(admitted[n].req.Prompt)*(n+1) <= 4096 {
			n++
		}
		e.prefill(v, admitted[:n])
		admitted = admitted[n:]
	}
	if len(v.running) > 0 {
		e.decode(v)
		worked = true
	}
	e.mu.Lock()
	if v.draining && len(v.running) == 0 && len(v.waiting) == 0 {
		delete(e.versions, v.name)
		e.mu.Unlock()
		v.prefix.drop()
		v.cache.drop()
		v.m.Close()
		return worked
	}
	e.mu.Unlock()
	return worked
}

// prefill computes the prompts of new sequences in one forward pass, each in a fresh slot after
// the running ones (reusing a cached prefix where there is one), and samples their first tokens.
// Rows are padded on the right to the longest remaining prompt; padding writes keys and values
// past a slot's length, which no later step can see and the next step overwrites.
func (e *Engine) prefill(v *version, batch []*seq) {
	hits := make([]*prefixEntry, len(batch))
	starts := make([]int, len(batch))
	T := 0
	for i, s := range batch {
		hits[i] = v.prefix.lookup(s.req.CacheSalt, s.req.Prompt)
		if hits[i] != nil {
			starts[i] = hits[i].n
		}
		T = max(T, len(s.req.Prompt)-starts[i])
	}
	// Padding to T must not run a row past the cache's end; such a batch goes one by one.
	if len(batch) > 1 {
		for i := range batch {
			if starts[i]+T > v.cache.maxLen {
				for _, s := range batch {
					e.prefill(v, []*seq{s})
				}
				return
			}
		}
	}
	first := len(v.running)
	for i, s := range batch {
		slot := first + i
		v.running = append(v.running, s)
		v.nRunning.Add(1)
		e.stats.running.Add(1)
		v.cache.lens[slot] = 0
		if v.prefix != nil {
			e.stats.prefixLookups.Add(1)
		}
		if hits[i] != nil {
			v.cache.copyPrefix(slot, hits[i].k, hits[i].v, hits[i].n)
			e.stats.prefixHits.Add(1)
			e.stats.reused.Add(int64(hits[i].n))
		}
	}
	slots := make([]int, len(batch))
	for i := range slots {
		slots[i] = first + i
	}
	if err := v.cache.begin(first, len(batch), T); err != nil {
		e.failSlots(v, slots, err)
		return
	}
	ids := make([][]int, len(batch))
	pos := make([][]int, len(batch))
	last := make([]int, len(batch))
	for i, s := range batch {
		rest := s.req.Prompt[starts[i]:]
		last[i] = len(rest) - 1
		ids[i] = make([]int, T)
		pos[i] = make([]int, T)
		copy(ids[i], rest)
		for t := range T {
			pos[i][t] = min(starts[i]+t, v.m.Config.MaxPositionEmbeddings-1)
		}
	}
	in, err := model.NewInputs(ids, pos, v.cache.Past()+T, func(b, t, j int) bool { return j <= starts[b]+t }, v.m.Device())
	if err != nil {
		e.failSlots(v, slots, err)
		return
	}
	logits, err := e.forwardAt(v, in, last)
	in.Drop()
	if err != nil {
		e.failSlots(v, slots, err)
		return
	}
	var done []int
	for i, s := range batch {
		v.cache.lens[first+i] = len(s.req.Prompt) // Advance counted the padding too
		e.stats.prompts.Add(int64(len(s.req.Prompt) - starts[i]))
		s.all = append(s.all[:0], s.req.Prompt...)
		if e.emit(v, s, logits[i]) {
			done = append(done, first+i)
		}
	}
	e.retire(v, done)
}

// decode runs one step for every running sequence.
func (e *Engine) decode(v *version) {
	n := len(v.running)
	// Sequences whose client went away stop here, before spending a step on them.
	var gone []int
	for i, s := range v.running {
		if s.ctx.Err() != nil {
			gone = append(gone, i)
		}
	}
	if len(gone) > 0 {
		e.failSlots(v, gone, nil)
		n = len(v.running)
		if n == 0 {
			return
		}
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	if err := v.cache.begin(0, n, 1); err != nil {
		e.failSlots(v, all, err)
		return
	}
	ids := make([][]int, n)
	pos := make([][]int, n)
	lens := append([]int(nil), v.cache.lens[:n]...)
	for i, s := range v.running {
		ids[i] = []int{s.last}
		pos[i] = []int{lens[i]}
	}
	in, err := model.NewInputs(ids, pos, v.cache.Past()+1, func(b, _, j int) bool { return j <= lens[b] }, v.m.Device())
	if err != nil {
		e.failSlots(v, all, err)
		return
	}
	logits, err := e.forward(v, in)
	in.Drop()
	if err != nil {
		e.failSlots(v, all, err)
		return
	}
	var done []int
	for i, s := range v.running {
		s.all = append(s.all, ids[i][0])
		if e.emit(v, s, logits[i]) {
			done = append(done, i)
		}
	}
	e.retire(v, done)
}

// forward runs the model over the cache's current step and returns each row's last-position
// logits, on the CPU.
func (e *Engine) forward(v *version, in model.Inputs) ([][]float32, error) {
	return e.forwardAt(v, in, nil)
}

// forwardAt is forward with the position to read per row (nil: the last one).
func (e *Engine) forwardAt(v *version, in model.Inputs, at []int) ([][]float32, error) {
	h, err := v.m.Forward(in, v.cache)
	if err != nil {
		return nil, err
	}
	size := h.MustSize()
	var rows *ts.Tensor
	if at == nil {
		rows = h.MustNarrow(1, size[1]-1, 1, true).MustSqueezeDim(1, true)
	} else {
		// Gather row b's hidden state at position at[b]: flatten [B, T, H] to [B*T, H].
		idx := make([]int64, len(at))
		for b, t := range at {
			idx[b] = int64(b)*size[1] + int64(t)
		}
		index := model.ToDevice(model.Int64Tensor(idx, int64(len(idx))), v.m.Device())
		flat := h.MustView([]int64{size[0] * size[1], size[2]}, true)
		rows = flat.MustIndexSelect(0, index, true)
		index.MustDrop()
	}
	lg := v.m.Logits(rows)
	rows.MustDrop()
	V := int(lg.MustSize()[1])
	flatLogits := model.Float32s(lg)
	lg.MustDrop()
	out := make([][]float32, size[0])
	for b := range out {
		out[b] = flatLogits[b*V : (b+1)*V]
	}
	return out, nil
}

// emit samples a token for s, sends it, and reports whether the sequence is finished.
func (e *Engine) emit(v *version, s *seq, logits []float32) bool {
	tok, lp := s.sampler.Sample(logits, s.req.Sampling)
	t := &Token{ID: tok, Logprob: lp}
	if s.req.TopLogprobs > 0 {
		t.TopIDs, t.TopLPs = sample.TopLogProbs(logits, s.req.TopLogprobs, s.req.Sampling.Temperature)
	}
	s.generated++
	s.last = tok
	e.stats.generated.Add(1)
	if s.first {
		s.first = false
		e.stats.ttftCount.Add(1)
		e.stats.ttftNanos.Add(int64(time.Since(s.submitted)))
	}
	ev := Event{Token: t, StopToken: -1}
	switch {
	case s.stops[tok]:
		ev.FinishReason, ev.StopToken = FinishStop, tok
	case s.generated >= s.req.MaxTokens:
		ev.FinishReason = FinishLength
	}
	e.send(v, s, ev)
	return ev.FinishReason != ""
}

func (e *Engine) send(v *version, s *seq, ev Event) {
	ev.Version = v.name
	s.out <- ev
	if ev.FinishReason != "" {
		close(s.out)
		if ev.FinishReason == FinishAbort {
			e.stats.aborted.Add(1)
		}
	}
}

func (e *Engine) finish(v *version, s *seq, reason string, stop int) {
	e.send(v, s, Event{FinishReason: reason, StopToken: stop})
}

func (e *Engine) failSlots(v *version, slots []int, err error) {
	for _, slot := range slots {
		e.send(v, v.running[slot], Event{FinishReason: FinishAbort, StopToken: -1, Err: err})
	}
	e.retire(v, slots)
}

// retire frees the given slots, moving the last running sequences into them so that running
// slots stay contiguous.
func (e *Engine) retire(v *version, slots []int) {
	sort.Sort(sort.Reverse(sort.IntSlice(slots)))
	for _, i := range slots {
		if s := v.running[i]; v.prefix != nil && len(s.all) == v.cache.lens[i] {
			v.prefix.store(s.req.CacheSalt, s.all, func(n int) ([]*ts.Tensor, []*ts.Tensor) { return v.cache.readPrefix(i, n) })
		}
		last := len(v.running) - 1
		v.cache.move(last, i)
		v.running[i] = v.running[last]
		v.running = v.running[:last]
		v.nRunning.Add(-1)
		v.cache.lens[last] = 0
		e.stats.running.Add(-1)
	}
}
