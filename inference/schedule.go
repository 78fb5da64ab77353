package inference

import (
	"sort"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/sample"
)

func (e *Engine) abortAll(v *version) {
	e.mu.Lock()
	all := append(v.waiting, v.running...)
	v.waiting, v.running = nil, nil
	v.nRunning.Store(0)
	e.mu.Unlock()
	for _, s := range all {
		s.out <- gen.Event{FinishReason: gen.FinishAbort, StopToken: -1, Version: v.name, Err: gen.ErrClosed}
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
			e.finish(v, s, gen.FinishAbort, -1)
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
	t := &gen.Token{ID: tok, Logprob: lp}
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
	ev := gen.Event{Token: t, StopToken: -1}
	switch {
	case s.stops[tok]:
		ev.FinishReason, ev.StopToken = gen.FinishStop, tok
	case s.generated >= s.req.MaxTokens:
		ev.FinishReason = gen.FinishLength
	}
	e.send(v, s, ev)
	return ev.FinishReason != ""
}

func (e *Engine) send(v *version, s *seq, ev gen.Event) {
	ev.Version = v.name
	s.out <- ev
	if ev.FinishReason != "" {
		close(s.out)
		if ev.FinishReason == gen.FinishAbort {
			e.stats.aborted.Add(1)
		}
	}
}

func (e *Engine) finish(v *version, s *seq, reason string, stop int) {
	e.send(v, s, gen.Event{FinishReason: reason, StopToken: stop})
}

func (e *Engine) failSlots(v *version, slots []int, err error) {
	for _, slot := range slots {
		e.send(v, v.running[slot], gen.Event{FinishReason: gen.FinishAbort, StopToken: -1, Err: err})
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
