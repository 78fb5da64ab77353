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
type slotCache struct {
	k, v    []*ts.Tensor // per layer [slots, maxLen, kvHeads*headDim]
	slots   int
	maxLen  int
	kvHeads int
	headDim int
	lens    []int // tokens stored per slot

	// The step being run: slots [first, first+count), each adding steps tokens.
	first, count, steps int
	past                int
}

func newSlotCache(m *model.Model, slots, maxLen int) *slotCache {
	c := m.Config
	width := int64(c.NumKeyValueHeads * c.HeadDim())
	sc := &slotCache{slots: slots, maxLen: maxLen, kvHeads: c.NumKeyValueHeads, headDim: c.HeadDim(), lens: make([]int, slots)}
	for range m.Layers() {
		sc.k = append(sc.k, ts.MustZeros([]int64{int64(slots), int64(maxLen), width}, gotch.Float, m.Device()))
		sc.v = append(sc.v, ts.MustZeros([]int64{int64(slots), int64(maxLen), width}, gotch.Float, m.Device()))
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
}

// begin prepares a step over slots [first, first+count), each adding steps tokens.
func (c *slotCache) begin(first, count, steps int) error {
	c.first, c.count, c.steps, c.past = first, count, steps, 0
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

// Append implements model.KV: it writes each slot's new keys and values after its stored ones and
// returns the step's slots over keys 0..past+steps-1. Positions beyond a slot's own length hold
// stale values; the step's mask hides them.
func (c *slotCache) Append(layer int, k, v *ts.Tensor) (*ts.Tensor, *ts.Tensor) {
	width := int64(c.kvHeads * c.headDim)
	idx := make([]int64, 0, c.count*c.steps)
	for s := c.first; s < c.first+c.count; s++ {
		for t := range c.steps {
			idx = append(idx, int64(s*c.maxLen+c.lens[s]+t))
		}
	}
	index := model.ToDevice(model.Int64Tensor(idx, int64(len(idx))), c.k[layer].MustDevice())
	defer index.MustDrop()
	out := make([]*ts.Tensor, 2)
	for i, pair := range [2][2]*ts.Tensor{{c.k[layer], k}, {c.v[layer], v}} {
		store, fresh := pair[0], pair[1]
		// [B, kv, T, hd] -> [B*T, kv*hd]
		rows := fresh.MustTranspose(1, 2, false).MustContiguous(true).MustView([]int64{-1, width}, true)
		flat := store.MustView([]int64{int64(c.slots * c.maxLen), width}, false)
		ts.NoGrad(func() { flat.MustIndexCopy_(0, index, rows) })
		flat.MustDrop()
		rows.MustDrop()
		keys := int64(c.past + c.steps)
		all := store.MustNarrow(0, int64(c.first), int64(c.count), false).MustNarrow(1, 0, keys, true)
		// [B, K, kv*hd] -> [B, kv, K, hd]
		out[i] = all.MustReshape([]int64{int64(c.count), keys, int64(c.kvHeads), int64(c.headDim)}, true).MustTranspose(1, 2, true)
	}
	return out[0], out[1]
}

// Advance implements model.KV.
func (c *slotCache) Advance(t int) {
	for s := c.first; s < c.first+c.count; s++ {
		c.lens[s] += t
	}
}

// move copies slot from into slot to (used to keep running slots contiguous).
func (c *slotCache) move(from, to int) {
	if from == to {
		return
	}
	n := int64(c.lens[from])
	if n > 0 {
		for l := range c.k {
			for _, store := range []*ts.Tensor{c.k[l], c.v[l]} {
				src := store.MustNarrow(0, int64(from), 1, false).MustNarrow(1, 0, n, true)
				dst := store.MustNarrow(0, int64(to), 1, false).MustNarrow(1, 0, n, true)
				ts.NoGrad(func() { dst.Copy_(src) })
				src.MustDrop()
				dst.MustDrop()
			}
		}
	}
	c.lens[to] = c.lens[from]
	c.lens[from] = 0
}

// copyPrefix writes n cached positions of a prefix (per layer [n, kv*hd] keys and values) into
// slot s, which must be empty.
func (c *slotCache) copyPrefix(s int, keys, values []*ts.Tensor, n int) {
	for l := range c.k {
		for i, store := range []*ts.Tensor{c.k[l], c.v[l]} {
			src := keys[l]
			if i == 1 {
				src = values[l]
			}
			dst := store.MustNarrow(0, int64(s), 1, false).MustNarrow(1, 0, int64(n), true).MustSqueezeDim(0, true)
			ts.NoGrad(func() { dst.Copy_(src) })
			dst.MustDrop()
		}
	}
	c.lens[s] = n
}

// readPrefix copies the first n positions of slot s out, per layer, for the prefix cache.
func (c *slotCache) readPrefix(s, n int) (keys, values []*ts.Tensor) {
	for l := range c.k {
		keys = append(keys, copyOf(c.k[l].MustNarrow(0, int64(s), 1, false).MustNarrow(1, 0, int64(n), true).MustSqueezeDim(0, true)))
		values = append(values, copyOf(c.v[l].MustNarrow(0, int64(s), 1, false).MustNarrow(1, 0, int64(n), true).MustSqueezeDim(0, true)))
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
