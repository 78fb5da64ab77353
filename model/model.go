package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/torchrt"
)

// Options configure a new model.
type Options struct {
	// Device runs the model; the zero value is the CPU.
	Device gotch.Device
	// ValueHead adds a critic head, score.weight [1, hidden] and score.bias [1], named as in
	// Hugging Face's Qwen2ForTokenClassification (what verl's critic loads).
	ValueHead bool
	// Seed makes random initialisation reproducible (libtorch's generator is not seeded here;
	// weights are drawn in Go).
	Seed uint64
}

// Model is a Qwen2 decoder. Its methods must run on one locked OS thread (torchrt.Executor):
// libtorch's grad mode is per thread.
type Model struct {
	Config Config
	vs     *nn.VarStore
	device gotch.Device

	embed  *ts.Tensor // model.embed_tokens.weight [vocab, hidden]
	layers []*block
	norm   *ts.Tensor // model.norm.weight [hidden]
	lmHead *ts.Tensor // lm_head.weight [vocab, hidden]; the embedding when tied
	score  *ts.Tensor // score.weight [1, hidden], or nil
	scoreB *ts.Tensor // score.bias [1], or nil

	cos, sin *ts.Tensor // rotary tables [max positions, head dim]

	lora *lora // adapters, or nil
}

// block is one decoder layer.
type block struct {
	inNorm, postNorm           *ts.Tensor
	qW, qB, kW, kB, vW, vB, oW *ts.Tensor
	gateW, upW, downW          *ts.Tensor
}

// New makes a randomly initialised model (normal(0, initializer_range) weights, zero biases,
// unit norms, as Hugging Face initialises Qwen2).
func New(cfg Config, opts Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Device.Name == "" {
		opts.Device = gotch.CPU
	}
	m := &Model{Config: cfg, vs: nn.NewVarStore(opts.Device), device: opts.Device}
	std := cfg.InitializerRange
	if std <= 0 {
		std = 0.02
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x5350415f4d4f44))
	normal := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * std)
		}
		return v
	}
	fill := func(n int, x float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = x
		}
		return v
	}
	H, I, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize
	hd, nh, nkv := cfg.HeadDim(), cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	var err error
	var added []string
	// add registers a parameter under its full Hugging Face name.
	add := func(name string, data []float32, dims ...int64) *ts.Tensor {
		if err != nil {
			return nil
		}
		var t *ts.Tensor
		t, err = addVar(m.vs, m.device, name, data, dims)
		added = append(added, name)
		return t
	}
	m.embed = add("model.embed_tokens.weight", normal(V*H), int64(V), int64(H))
	for i := range cfg.NumHiddenLayers {
		lp := "model.layers." + strconv.Itoa(i) + "."
		b := &block{
			inNorm:   add(lp+"input_layernorm.weight", fill(H, 1), int64(H)),
			postNorm: add(lp+"post_attention_layernorm.weight", fill(H, 1), int64(H)),
			qW:       add(lp+"self_attn.q_proj.weight", normal(nh*hd*H), int64(nh*hd), int64(H)),
			qB:       add(lp+"self_attn.q_proj.bias", fill(nh*hd, 0), int64(nh*hd)),
			kW:       add(lp+"self_attn.k_proj.weight", normal(nkv*hd*H), int64(nkv*hd), int64(H)),
			kB:       add(lp+"self_attn.k_proj.bias", fill(nkv*hd, 0), int64(nkv*hd)),
			vW:       add(lp+"self_attn.v_proj.weight", normal(nkv*hd*H), int64(nkv*hd), int64(H)),
			vB:       add(lp+"self_attn.v_proj.bias", fill(nkv*hd, 0), int64(nkv*hd)),
			oW:       add(lp+"self_attn.o_proj.weight", normal(H*nh*hd), int64(H), int64(nh*hd)),
			gateW:    add(lp+"mlp.gate_proj.weight", normal(I*H), int64(I), int64(H)),
			upW:      add(lp+"mlp.up_proj.weight", normal(I*H), int64(I), int64(H)),
			downW:    add(lp+"mlp.down_proj.weight", normal(H*I), int64(H), int64(I)),
		}
		m.layers = append(m.layers, b)
	}
	m.norm = add("model.norm.weight", fill(H, 1), int64(H))
	if cfg.TieWordEmbeddings {
		m.lmHead = m.embed
	} else {
		m.lmHead = add("lm_head.weight", normal(V*H), int64(V), int64(H))
	}
	if opts.ValueHead {
		m.score = add("score.weight", normal(H), 1, int64(H))
		m.scoreB = add("score.bias", fill(1, 0), 1)
	}
	if err == nil {
		vars := m.vs.Variables()
		for _, name := range added {
			if _, ok := vars[name]; !ok {
				err = fmt.Errorf("parameter %s was registered under another name", name)
				break
			}
		}
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("new model: %w", err)
	}
	m.cos, m.sin = ropeTables(cfg, opts.Device)
	return m, nil
}

// addVar registers a trainable parameter under its full dotted name. Each name is built from
// the root: gotch's Path.Sub appends to a shared slice, so sibling paths made from one parent
// overwrite each other's names, and gotch refuses dots inside one path element.
func addVar(vs *nn.VarStore, device gotch.Device, name string, data []float32, dims []int64) (*ts.Tensor, error) {
	parts := strings.Split(name, ".")
	p := vs.Root()
	for _, part := range parts[:len(parts)-1] {
		p = p.Sub(part)
	}
	t := ToDevice(Float32Tensor(data, dims...), device)
	param, err := p.Add(parts[len(parts)-1], t, true)
	t.MustDrop()
	return param, err
}

// ropeTables precomputes cos and sin of the rotary angles, in float64 then rounded, as
// Hugging Face computes them: inv_freq = theta^(-2i/d), angle = position * inv_freq, and the
// half-width table repeated twice.
func ropeTables(cfg Config, device gotch.Device) (*ts.Tensor, *ts.Tensor) {
	hd, n := cfg.HeadDim(), cfg.MaxPositionEmbeddings
	cos, sin := make([]float32, n*hd), make([]float32, n*hd)
	for p := range n {
		for i := range hd / 2 {
			inv := 1 / math.Pow(cfg.RopeTheta, float64(2*i)/float64(hd))
			// Hugging Face computes inv_freq and the product in float32.
			a := float64(float32(p) * float32(inv))
			c, s := float32(math.Cos(a)), float32(math.Sin(a))
			cos[p*hd+i], cos[p*hd+i+hd/2] = c, c
			sin[p*hd+i], sin[p*hd+i+hd/2] = s, s
		}
	}
	return ToDevice(Float32Tensor(cos, int64(n), int64(hd)), device), ToDevice(Float32Tensor(sin, int64(n), int64(hd)), device)
}

// Close frees the model's tensors.
func (m *Model) Close() {
	if m.cos != nil {
		m.cos.MustDrop()
		m.sin.MustDrop()
		m.cos, m.sin = nil, nil
	}
	if m.vs != nil {
		m.vs.Destroy()
		m.vs = nil
	}
	if m.lora != nil {
		m.lora.vs.Destroy()
		m.lora = nil
	}
}

// VarStore exposes the parameters, for optimisers and checkpoints.
func (m *Model) VarStore() *nn.VarStore { return m.vs }

// HasValueHead says whether the model has a critic head.
func (m *Model) HasValueHead() bool { return m.score != nil }

// NumParams counts parameters (the tied head once).
func (m *Model) NumParams() int64 {
	var n int64
	for _, v := range m.vs.Variables() {
		n += int64(v.Numel())
	}
	return n
}

// isCPU compares by name: gotch builds CPU devices with different Values.
func isCPU(d gotch.Device) bool { return d.Name == "" || d.Name == gotch.CPU.Name }

// ToDevice moves a CPU tensor to d (dropping the CPU copy), or returns it as is when d is the CPU.
// Tensors built from Go slices start on the CPU; this is the one place they move.
func ToDevice(t *ts.Tensor, d gotch.Device) *ts.Tensor {
	if isCPU(d) {
		return t
	}
	return t.MustTo(d, true)
}

// linear is x @ w^T (+ b).
func linear(x, w, b *ts.Tensor) *ts.Tensor {
	wt := w.MustT(false)
	y := x.MustMatmul(wt, false)
	wt.MustDrop()
	if b != nil {
		y = y.MustAdd(b, true)
	}
	return y
}

// rmsNorm is x / sqrt(mean(x²) + eps) * w over the last dimension.
func rmsNorm(x, w *ts.Tensor, eps float64) *ts.Tensor {
	sq := x.MustMul(x, false)
	ms := sq.MustMeanDim([]int64{-1}, true, gotch.Float, true)
	inv := ms.MustAddScalar(ts.FloatScalar(eps), true).MustRsqrt(true)
	y := x.MustMul(inv, false)
	inv.MustDrop()
	return y.MustMul(w, true)
}

// rotate applies the rotary embedding to x [B, heads, T, hd] with cos, sin [B, 1, T, hd]:
// x·cos + rotate_half(x)·sin, where rotate_half(x) = [-x₂, x₁].
func rotate(x, cos, sin *ts.Tensor, hd int64) *ts.Tensor {
	x1 := x.MustNarrow(-1, 0, hd/2, false)
	x2 := x.MustNarrow(-1, hd/2, hd/2, false)
	neg := x2.MustNeg(true)
	rot := ts.MustCat([]*ts.Tensor{neg, x1}, -1)
	neg.MustDrop()
	x1.MustDrop()
	a := x.MustMul(cos, false)
	b := rot.MustMul(sin, true)
	out := a.MustAdd(b, true)
	b.MustDrop()
	return out
}

// ParseDevice reads "cpu", "cuda" or "cuda:N". CUDA needs a libtorch built with it (Debian's is
// CPU only), so asking for it elsewhere is an error rather than a silent fall back to the CPU.
func ParseDevice(s string) (gotch.Device, error) {
	switch {
	case s == "" || s == "cpu":
		return gotch.CPU, nil
	case s == "cuda" || strings.HasPrefix(s, "cuda:"):
		if !gotch.CUDA.IsAvailable() {
			why := "this libtorch has no usable CUDA"
			if info, err := torchrt.ReadInfo(); err == nil && info.GPUProblem() != "" {
				why = info.GPUProblem()
			}
			return gotch.Device{}, fmt.Errorf("device %q: %s", s, why)
		}
		n := 0
		if s != "cuda" {
			if _, err := fmt.Sscanf(s, "cuda:%d", &n); err != nil || n < 0 || int64(n) >= gotch.CUDA.DeviceCount() {
				return gotch.Device{}, fmt.Errorf("device %q: want cuda:0..cuda:%d", s, gotch.CUDA.DeviceCount()-1)
			}
		}
		return gotch.CudaBuilder(uint(n)), nil
	}
	return gotch.Device{}, fmt.Errorf("device %q: want cpu, cuda or cuda:N", s)
}
