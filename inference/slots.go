package inference

import (
	"fmt"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/model"
)

// slotCache is one policy version's KV cache: a fixed number of slots, each holding one sequence's
// keys and values at positions 0..len-1, preallocated so that decoding never reallocates. Running
// sequences occupy slots 0..active-1 (a finished sequence's slot is refilled from the last one),
// so a decoding step attends to one contiguous range.
//
// The layout is [slots, kv heads, maxLen, head dim], the layout attention reads: the step's slots
// and its first past+steps positions are a view of the store (narrowed twice), which attention's
// matmuls read in place. In a [slots, maxLen, kv·hd] layout the same range had to be copied into
// head-major order on every step in every layer, a cost that grew with the context (decoding after
// a 1,500-token prompt ran at 0.25x the rate after a 32-token one; docs/serve.md).
type slotCache struct {
	k, v    []*ts.Tensor // per layer [slots, kvHeads, maxLen, headDim]
	slots   int
	maxLen  int
	kvHeads int
	headDim int
	lens    []int // tokens stored per slot

	// The step being run: slots [first, first+count), each adding steps tokens.
	first, count, steps int
	past                int
	// index holds, for the step, the flat rows of the store ([slots·kvHeads·maxLen, headDim])
	// that its new keys and values go to, in [count, kvHeads, steps] order; made once per step.
	index *ts.Tensor
}

func newSlotCache(m *model.Model, slots, maxLen int) *slotCache {
	c := m.Config
	sc := &slotCache{slots: slots, maxLen: maxLen, kvHeads: c.NumKeyValueHeads, headDim: c.HeadDim(), lens: make([]int, slots)}
	shape := []int64{int64(slots), int64(c.NumKeyValueHeads), int64(maxLen), int64(c.HeadDim())}
	for range m.Layers() {
		sc.k = append(sc.k, ts.MustZeros(shape, gotch.Float, m.Device()))
		sc.v = append(sc.v, ts.MustZeros(shape, gotch.Float, m.Device()))
	}
	return sc
}

// bytesPerSlot is the cache memory one sequence occupies.
func bytesPerSlot(cfg model.Config, maxLen int) int64 {
	return int64(cfg.NumHiddenLayers) * 2 * int64(maxLen) * int64(cfg.NumKeyValueHeads*cfg.HeadDim()) * 4
}

func (c *slotCache) drop() {
	for i := range c.k {
		c.k[i].MustDrop()
		c.v[i].MustDrop()
	}
	c.k, c.v = nil, nil
	c.dropIndex()
}

func (c *slotCache) dropIndex() {
	if c.index != nil {
		c.index.MustDrop()
		c.index = nil
	}
}

// begin prepares a step over slots [first, first+count), each adding steps tokens.
func (c *slotCache) begin(first, count, steps int) error {
	c.first, c.count, c.steps, c.past = first, count, steps, 0
	c.dropIndex()
	for s := first; s < first+count; s++ {
		if c.lens[s]+steps > c.maxLen {
			return fmt.Errorf("slot %d would hold %d tokens; the limit is %d", s, c.lens[s]+steps, c.maxLen)
		}
		c.past = max(c.past, c.lens[s])
	}
	return nil
}

// Past implements model.KV: the longest stored length among the step's slots.
func (c *slotCache) Past() int { return c.past }

// stepIndex is the step's destination rows (see index), made on the first layer's Append.
func (c *slotCache) stepIndex() *ts.Tensor {
	if c.index == nil {
		idx := make([]int64, 0, c.count*c.kvHeads*c.steps)
		for s := c.first; s < c.first+c.count; s++ {
			for h := range c.kvHeads {
				row := (s*c.kvHeads + h) * c.maxLen
				for t := range c.steps {
					idx = append(idx, int64(row+c.lens[s]+t))
				}
			}
		}
		c.index = model.ToDevice(model.Int64Tensor(idx, int64(len(idx))), c.k[0].MustDevice())
	}
	return c.index
}

// Append implements model.KV: it writes each slot's new keys and values after its stored ones and
// returns the step's slots over keys 0..past+steps-1, as views of the store. Positions beyond a
// slot's own length hold stale values; the step's mask hides them.
func (c *slotCache) Append(layer int, k, v *ts.Tensor) (*ts.Tensor, *ts.Tensor) {
	index := c.stepIndex()
	hd := int64(c.headDim)
	keys := int64(c.past + c.steps)
	out := make([]*ts.Tensor, 2)
	for i, pair := range [2][2]*ts.Tensor{{c.k[layer], k}, {c.v[layer], v}} {
		store, fresh := pair[0], pair[1]
		// [count, kv, steps, hd] -> [count·kv·steps, hd], rows in the index's order.
		rows := fresh.MustContiguous(false).MustView([]int64{-1, hd}, true)
		flat := store.MustView([]int64{-1, hd}, false)
		ts.NoGrad(func() { flat.MustIndexCopy_(0, index, rows) })
		flat.MustDrop()
		rows.MustDrop()
		out[i] = store.MustNarrow(0, int64(c.first), int64(c.count), false).MustNarrow(2, 0, keys, true)
	}
	return out[0], out[1]
}

// Advance implements model.KV.
func (c *slotCache) Advance(t int) {
	for s := c.first; s < c.first+c.count; s++ {
		c.lens[s] += t
	}
	c.dropIndex()
}

// positions is slot s's first n positions in one layer's store, a [kvHeads, n, headDim] view.
func positions(store *ts.Tensor, s, n int) *ts.Tensor {
	return store.MustNarrow(0, int64(s), 1, false).MustNarrow(2, 0, int64(n), true).MustSqueezeDim(0, true)
}

// move copies slot from into slot to (used to keep running slots contiguous).
func (c *slotCache) move(from, to int) {
	if from == to {
		return
	}
	if n := c.lens[from]; n > 0 {
		for l := range c.k {
			for _, store := range []*ts.Tensor{c.k[l], c.v[l]} {
				src, dst := positions(store, from, n), positions(store, to, n)
				ts.NoGrad(func() { dst.Copy_(src) })
				src.MustDrop()
				dst.MustDrop()
			}
		}
	}
	c.lens[to] = c.lens[from]
	c.lens[from] = 0
}

// copyPrefix writes n cached positions of a prefix (per layer [kvHeads, n, headDim] keys and
// values) into slot s, which must be empty.
func (c *slotCache) copyPrefix(s int, keys, values []*ts.Tensor, n int) {
	for l := range c.k {
		for i, store := range []*ts.Tensor{c.k[l], c.v[l]} {
			src := keys[l]
			if i == 1 {
				src = values[l]
			}
			dst := positions(store, s, n)
			ts.NoGrad(func() { dst.Copy_(src) })
			dst.MustDrop()
		}
	}
	c.lens[s] = n
}

// readPrefix copies the first n positions of slot s out, per layer, for the prefix cache.
func (c *slotCache) readPrefix(s, n int) (keys, values []*ts.Tensor) {
	for l := range c.k {
		keys = append(keys, copyOf(positions(c.k[l], s, n)))
		values = append(values, copyOf(positions(c.v[l], s, n)))
	}
	return keys, values
}

// copyOf returns a tensor with its own storage holding view's values, and drops the view: the
// prefix cache must not alias slot memory that later sequences overwrite.
func copyOf(view *ts.Tensor) *ts.Tensor {
	out := view.MustZerosLike(false)
	ts.NoGrad(func() { out.Copy_(view) })
	view.MustDrop()
	return out
}
