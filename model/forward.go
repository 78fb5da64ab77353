package model

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// maskedOut is added to attention scores of keys a query may not see. A large finite value,
// not -inf, so that a row with nothing to see (a padding query) gives a uniform softmax rather
// than NaN; such rows are never read.
const maskedOut = -1e30

// KV stores the keys and values of the tokens a forward step adds and gives back everything those
// tokens attend to. Cache is the simple implementation (one growing tensor per layer); the
// inference engine has its own, with a slot per sequence.
type KV interface {
	// Past is P, the number of key positions stored before this step; the step's mask covers
	// P+T keys.
	Past() int
	// Append stores layer's new keys and values [B, kv heads, T, hd] (it must not keep or drop
	// the arguments) and returns new handles to all keys and values, [B, kv heads, P+T, hd],
	// which the caller drops.
	Append(layer int, k, v *ts.Tensor) (*ts.Tensor, *ts.Tensor)
	// Advance is called once per step, after every layer, with T.
	Advance(t int)
}

// Cache holds each layer's keys and values [B, kv heads, P, hd] for the P tokens seen so far, so
// a decoding step computes only the new token.
type Cache struct {
	k, v []*ts.Tensor
	// Len is P, the number of cached positions.
	Len int
}

// NewCache makes an empty cache for this model.
func (m *Model) NewCache() *Cache {
	return &Cache{k: make([]*ts.Tensor, len(m.layers)), v: make([]*ts.Tensor, len(m.layers))}
}

// Past implements KV.
func (c *Cache) Past() int { return c.Len }

// Advance implements KV.
func (c *Cache) Advance(t int) { c.Len += t }

// Append implements KV by concatenation. The stored tensors are detached, so decoding does not
// grow autograd graphs.
func (c *Cache) Append(layer int, k, v *ts.Tensor) (*ts.Tensor, *ts.Tensor) {
	if old := c.k[layer]; old != nil {
		k2 := ts.MustCat([]*ts.Tensor{old, k}, 2)
		v2 := ts.MustCat([]*ts.Tensor{c.v[layer], v}, 2)
		old.MustDrop()
		c.v[layer].MustDrop()
		c.k[layer], c.v[layer] = k2.MustDetach(true), v2.MustDetach(true)
	} else {
		c.k[layer], c.v[layer] = k.MustDetach(false), v.MustDetach(false)
	}
	return c.k[layer].MustShallowClone(), c.v[layer].MustShallowClone()
}

// Drop frees the cache's tensors.
func (c *Cache) Drop() {
	for i := range c.k {
		if c.k[i] != nil {
			c.k[i].MustDrop()
			c.v[i].MustDrop()
			c.k[i], c.v[i] = nil, nil
		}
	}
	c.Len = 0
}

// Inputs is one forward step for a batch: T new tokens per sequence after the cache's P.
type Inputs struct {
	IDs       *ts.Tensor // [B, T] int64
	Positions *ts.Tensor // [B, T] int64
	Mask      *ts.Tensor // [B, 1, T, P+T] float, 0 where a query may attend, maskedOut elsewhere
}

// Drop frees the inputs' tensors.
func (in Inputs) Drop() {
	in.IDs.MustDrop()
	in.Positions.MustDrop()
	in.Mask.MustDrop()
}

// MakeInputs builds the tensors for T new tokens per sequence. tokens[b] holds sequence b's new
// tokens; valid[b] has one entry per key (the P cached ones, then the T new ones), false for
// padding. Positions count the real tokens before each one, so left padding does not shift them
// (as Hugging Face does with position_ids from the attention mask). pastPositions[b] is the
// number of real tokens among the P cached ones.
func MakeInputs(tokens [][]int, valid [][]bool, device gotch.Device) (Inputs, error) {
	B := len(tokens)
	if B == 0 || len(valid) != B {
		return Inputs{}, fmt.Errorf("make inputs: %d sequences and %d validity rows", B, len(valid))
	}
	T := len(tokens[0])
	K := len(valid[0])
	if T == 0 || K < T {
		return Inputs{}, fmt.Errorf("make inputs: %d new tokens and %d keys", T, K)
	}
	P := K - T
	ids := make([]int64, 0, B*T)
	pos := make([]int64, 0, B*T)
	mask := make([]float32, B*T*K)
	for b := range B {
		if len(tokens[b]) != T || len(valid[b]) != K {
			return Inputs{}, fmt.Errorf("make inputs: sequence %d has %d tokens and %d keys, want %d and %d (pad first)", b, len(tokens[b]), len(valid[b]), T, K)
		}
		real := 0
		for j := range P {
			if valid[b][j] {
				real++
			}
		}
		for i, tok := range tokens[b] {
			ids = append(ids, int64(tok))
			pos = append(pos, int64(real))
			if valid[b][P+i] {
				real++
			}
			row := mask[(b*T+i)*K : (b*T+i+1)*K]
			for j := range K {
				if j > P+i || !valid[b][j] {
					row[j] = maskedOut
				}
			}
		}
	}
	in := Inputs{
		IDs:       Int64Tensor(ids, int64(B), int64(T)),
		Positions: Int64Tensor(pos, int64(B), int64(T)),
		Mask:      Float32Tensor(mask, int64(B), 1, int64(T), int64(K)),
	}
	in.IDs, in.Positions, in.Mask = ToDevice(in.IDs, device), ToDevice(in.Positions, device), ToDevice(in.Mask, device)
	return in, nil
}

// Forward runs the decoder and returns the final hidden states [B, T, hidden]. With a cache, the
// new tokens attend to the cached ones, and their keys and values are appended to it.
func (m *Model) Forward(in Inputs, cache KV) (*ts.Tensor, error) {
	size := in.IDs.MustSize()
	if len(size) != 2 {
		return nil, fmt.Errorf("forward: ids have shape %v, want [batch, tokens]", size)
	}
	B, T := size[0], size[1]
	past := int64(0)
	if cache != nil {
		past = int64(cache.Past())
	}
	if ms := in.Mask.MustSize(); len(ms) != 4 || ms[0] != B || ms[2] != T || ms[3] != past+T {
		return nil, fmt.Errorf("forward: mask shape %v, want [%d 1 %d %d]", ms, B, T, past+T)
	}
	if maxPos := int64(m.Config.MaxPositionEmbeddings); past+T > maxPos {
		return nil, fmt.Errorf("forward: %d positions exceed max_position_embeddings %d", past+T, maxPos)
	}
	hd := int64(m.Config.HeadDim())
	flat := in.Positions.MustView([]int64{-1}, false)
	cos := m.cos.MustIndexSelect(0, flat, false).MustView([]int64{B, 1, T, hd}, true)
	sin := m.sin.MustIndexSelect(0, flat, false).MustView([]int64{B, 1, T, hd}, true)
	flat.MustDrop()
	defer cos.MustDrop()
	defer sin.MustDrop()

	h := ts.MustEmbedding(m.embed, in.IDs, -1, false, false)
	for i, l := range m.layers {
		x := rmsNorm(h, l.inNorm, m.Config.RMSNormEps)
		a := m.attention(l, i, x, cos, sin, in.Mask, cache)
		x.MustDrop()
		h = h.MustAdd(a, true)
		a.MustDrop()
		x = rmsNorm(h, l.postNorm, m.Config.RMSNormEps)
		f := m.mlp(l, i, x)
		x.MustDrop()
		h = h.MustAdd(f, true)
		f.MustDrop()
	}
	if cache != nil {
		cache.Advance(int(T))
	}
	out := rmsNorm(h, m.norm, m.Config.RMSNormEps)
	h.MustDrop()
	return out, nil
}

// attention is grouped-query self-attention with rotary positions; x is [B, T, hidden].
func (m *Model) attention(l *block, layer int, x, cos, sin, mask *ts.Tensor, kv KV) *ts.Tensor {
	c := m.Config
	size := x.MustSize()
	B, T := size[0], size[1]
	nh, nkv, hd := int64(c.NumAttentionHeads), int64(c.NumKeyValueHeads), int64(c.HeadDim())
	heads := func(t *ts.Tensor, n int64) *ts.Tensor { // [B, T, n·hd] -> [B, n, T, hd]
		return t.MustView([]int64{B, T, n, hd}, true).MustTranspose(1, 2, true)
	}
	q0 := heads(m.proj(layer, "q_proj", x, l.qW, l.qB), nh)
	k0 := heads(m.proj(layer, "k_proj", x, l.kW, l.kB), nkv)
	v := heads(m.proj(layer, "v_proj", x, l.vW, l.vB), nkv)
	q := rotate(q0, cos, sin, hd)
	k := rotate(k0, cos, sin, hd)
	q0.MustDrop()
	k0.MustDrop()
	if kv != nil {
		kAll, vAll := kv.Append(layer, k, v)
		k.MustDrop()
		v.MustDrop()
		k, v = kAll, vAll
	}
	// Grouped-query attention without repeating keys: query head h uses key head h / g, so the
	// g query heads of a group stack into one matrix of g·T rows against that group's keys. k and
	// v may be views of a KV cache (a decoding step reads them in place); q is small.
	g := nh / nkv
	K := k.MustSize()[2]
	qg := q.MustReshape([]int64{B, nkv, g * T, hd}, true)
	kt := k.MustTranspose(-2, -1, true)
	scores := qg.MustMatmul(kt, true).MustMulScalar(ts.FloatScalar(1/math.Sqrt(float64(hd))), true)
	kt.MustDrop()
	// [B, kv, g·T, K] -> [B, kv, g, T, K] so the mask [B, 1, T, K] broadcasts over heads.
	scores = scores.MustView([]int64{B, nkv, g, T, K}, true)
	m5 := mask.MustUnsqueeze(1, false)
	scores = scores.MustAdd(m5, true)
	m5.MustDrop()
	probs := scores.MustSoftmax(-1, gotch.Float, true).MustView([]int64{B, nkv, g * T, K}, true)
	out := probs.MustMatmul(v, true)
	v.MustDrop()
	// [B, kv, g·T, hd] is [B, heads, T, hd] in memory.
	out = out.MustView([]int64{B, nh, T, hd}, true)
	out = out.MustTranspose(1, 2, true).MustContiguous(true).MustView([]int64{B, T, nh * hd}, true)
	y := m.proj(layer, "o_proj", out, l.oW, nil)
	out.MustDrop()
	return y
}

// mlp is the SwiGLU feed-forward: down(silu(gate(x)) · up(x)).
func (m *Model) mlp(l *block, layer int, x *ts.Tensor) *ts.Tensor {
	g := m.proj(layer, "gate_proj", x, l.gateW, nil).MustSilu(true)
	u := m.proj(layer, "up_proj", x, l.upW, nil)
	gu := g.MustMul(u, true)
	u.MustDrop()
	y := m.proj(layer, "down_proj", gu, l.downW, nil)
	gu.MustDrop()
	return y
}

// Logits maps hidden states [B, T, hidden] to next-token logits [B, T, vocab].
func (m *Model) Logits(hidden *ts.Tensor) *ts.Tensor { return linear(hidden, m.lmHead, nil) }

// Values maps hidden states [B, T, hidden] to the critic's values [B, T]; it needs the value head.
func (m *Model) Values(hidden *ts.Tensor) (*ts.Tensor, error) {
	if m.score == nil {
		return nil, fmt.Errorf("values: the model has no value head")
	}
	return linear(hidden, m.score, m.scoreB).MustSqueezeDim(-1, true), nil
}

// NewInputs builds step inputs from explicit per-token positions and an explicit mask, for callers
// whose sequences are not laid out as MakeInputs assumes (the inference engine's slots). ids and
// positions are [B][T]; allowed is a function of (b, t, key) over K keys.
func NewInputs(ids, positions [][]int, keys int, allowed func(b, t, key int) bool, device gotch.Device) (Inputs, error) {
	B := len(ids)
	if B == 0 || len(positions) != B {
		return Inputs{}, fmt.Errorf("new inputs: %d id rows and %d position rows", B, len(positions))
	}
	T := len(ids[0])
	flatIDs := make([]int64, 0, B*T)
	flatPos := make([]int64, 0, B*T)
	mask := make([]float32, B*T*keys)
	for b := range B {
		if len(ids[b]) != T || len(positions[b]) != T {
			return Inputs{}, fmt.Errorf("new inputs: row %d has %d ids and %d positions, want %d", b, len(ids[b]), len(positions[b]), T)
		}
		for t := range T {
			flatIDs = append(flatIDs, int64(ids[b][t]))
			flatPos = append(flatPos, int64(positions[b][t]))
			row := mask[(b*T+t)*keys : (b*T+t+1)*keys]
			for j := range keys {
				if !allowed(b, t, j) {
					row[j] = maskedOut
				}
			}
		}
	}
	in := Inputs{
		IDs:       Int64Tensor(flatIDs, int64(B), int64(T)),
		Positions: Int64Tensor(flatPos, int64(B), int64(T)),
		Mask:      Float32Tensor(mask, int64(B), 1, int64(T), int64(keys)),
	}
	in.IDs, in.Positions, in.Mask = ToDevice(in.IDs, device), ToDevice(in.Positions, device), ToDevice(in.Mask, device)
	return in, nil
}

// Device is where the model's weights live.
func (m *Model) Device() gotch.Device { return m.device }

// Layers is the number of decoder layers (one KV entry each).
func (m *Model) Layers() int { return len(m.layers) }
