package inference

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/model"
)

// version is one loaded checkpoint. name, dir, number, m and loaded are set before it is
// published in Engine.versions and never change.
type version struct {
	name   string
	dir    string
	number int64
	m      *model.Model
	// cache and prefix belong to the engine loop (cache.slots is fixed at load, so anyone may
	// read it).
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

// Versions lists loaded versions, oldest first.
func (e *Engine) Versions() []gen.VersionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []gen.VersionInfo
	for _, v := range e.versions {
		out = append(out, gen.VersionInfo{Name: v.name, Number: v.number, Dir: v.dir, Loaded: v.loaded, Latest: v.name == e.latest,
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
		return gen.ErrClosed
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

// CheckVersion reports a version name or number LoadVersion would refuse (gen.CheckVersion).
func (e *Engine) CheckVersion(name string, number int64) error {
	return gen.CheckVersion(e.opts.Name, name, number)
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
			return fmt.Errorf("%w: vocab_size %d, but %s serves %d; a server serves one tokenizer", gen.ErrIncompatible, cfg.VocabSize, v.name, v.m.Config.VocabSize)
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

func (e *Engine) resolveLocked(name string) (string, error) {
	if name == "" || name == e.opts.Name {
		if e.latest == "" {
			return "", fmt.Errorf("%w: no version is loaded yet", gen.ErrUnknownModel)
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
	return "", fmt.Errorf("%w %q (serving %s, and %s for the latest)", gen.ErrUnknownModel, name, fmt.Sprint(names), e.opts.Name)
}
