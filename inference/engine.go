// Package inference is spa's generation engine: continuous batching over a slot KV cache, several
// policy versions at once and hot weight reloads, all torch work on one locked OS thread. It
// implements gen.Generator; the OpenAI-compatible HTTP API over it is inference/api, which has no
// libtorch, and Open puts the two together as spa serve runs them.
//
// The engine's files: engine.go (options, submission, the loop), versions.go (loading, naming,
// evicting versions) and schedule.go (admission, prefill, decode, sampling, retiring).
package inference

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/inference/gen"
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
	// with gen.ErrQueueFull. Zero means 4096.
	MaxWaiting int
	// LoadTimeout bounds reading a checkpoint from disk; a load past it fails without holding up
	// the next one. Zero means 5 minutes.
	LoadTimeout time.Duration
}

// seq is one sequence. req, ctx, out and submitted are set by Submit before the sequence is
// queued; the rest belongs to the engine loop.
type seq struct {
	req       gen.Request
	ctx       context.Context
	out       chan gen.Event
	sampler   *sample.Sampler
	last      int // the token to feed next
	generated int
	stops     map[int]bool
	submitted time.Time
	first     bool
	all       []int // tokens whose keys and values are in the slot
}

// Engine schedules generation. Its methods are safe for concurrent use.
type Engine struct {
	// opts is set by New and never changes.
	opts Options
	// loader is the torch thread that builds and frees models, so that a load runs beside the
	// loop's decoding.
	loader *torchrt.Executor

	// mu guards versions (the map, and each version's waiting and draining), latest, paused and
	// closed. The loop holds it only to take a snapshot or a queued sequence, never across torch
	// work.
	mu       sync.Mutex
	versions map[string]*version
	latest   string
	paused   bool
	closed   bool
	// wake tells the loop there is work (a submission, a load, Resume, Close); done closes when
	// the loop has ended.
	wake chan struct{}
	done chan struct{}

	// stats are atomic counters, written by the loop and Submit, read by anyone.
	stats stats
}

// stats are the engine's counters; Stats gives a snapshot.
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

// QueueRoom is how many more sequences may queue before Submit refuses them with gen.ErrQueueFull.
func (e *Engine) QueueRoom() int { return e.opts.MaxWaiting - int(e.stats.waiting.Load()) }

// Stats is a snapshot of the engine's counters.
func (e *Engine) Stats() gen.Stats {
	st := &e.stats
	return gen.Stats{
		Requests: st.requests.Load(), Aborted: st.aborted.Load(), Waiting: st.waiting.Load(), Running: st.running.Load(),
		PromptTokens: st.prompts.Load(), GeneratedTokens: st.generated.Load(),
		PrefixLookups: st.prefixLookups.Load(), PrefixHits: st.prefixHits.Load(), ReusedTokens: st.reused.Load(),
		FirstTokens: st.ttftCount.Load(), FirstTokenTime: time.Duration(st.ttftNanos.Load()),
	}
}

// The engine is what the HTTP API drives.
var _ gen.Generator = (*Engine)(nil)

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
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

// Submit queues a request. Events arrive on the returned channel until one has FinishReason set;
// cancelling ctx aborts the sequence at the next token boundary.
func (e *Engine) Submit(ctx context.Context, req gen.Request) (<-chan gen.Event, error) {
	req, err := gen.CheckRequest(req, e.opts.MaxModelLen)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, gen.ErrClosed
	}
	if w := e.stats.waiting.Load(); w >= int64(e.opts.MaxWaiting) {
		return nil, fmt.Errorf("%w: %d sequences are waiting for a slot, the limit (server.max_waiting) is %d; retry later", gen.ErrQueueFull, w, e.opts.MaxWaiting)
	}
	name, err := e.resolveLocked(req.Model)
	if err != nil {
		return nil, err
	}
	v := e.versions[name]
	if err := gen.CheckPromptIDs(req.Prompt, v.m.Config.VocabSize); err != nil {
		return nil, err
	}
	s := &seq{
		req: req, ctx: ctx, out: make(chan gen.Event, req.MaxTokens+2), sampler: sample.New(req.Seed),
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
