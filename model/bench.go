package model

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"
)

// BenchResult is one throughput measurement.
type BenchResult struct {
	What         string  `json:"what"`
	Batch        int     `json:"batch"`
	Tokens       int     `json:"tokens"`
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_sec"`
}

// MeasureTraining times training steps on random tokens on device: forward, cross-entropy over
// every position, backward and an AdamW step, batch sequences of seqLen tokens. One untimed
// warm-up step comes first. It must run on a locked OS thread.
func MeasureTraining(cfg Config, device gotch.Device, batch, seqLen, steps int) (BenchResult, error) {
	m, err := New(cfg, Options{Seed: 1, Device: device})
	if err != nil {
		return BenchResult{}, err
	}
	defer m.Close()
	opt, err := nn.DefaultAdamWConfig().Build(m.VarStore(), 1e-4)
	if err != nil {
		return BenchResult{}, err
	}
	rng := rand.New(rand.NewPCG(1, 1))
	toks, valid := randomBatch(rng, batch, seqLen+1, cfg.VocabSize)
	inputs := make([][]int, batch)
	var targets []int64
	for b := range batch {
		inputs[b] = toks[b][:seqLen]
		valid[b] = valid[b][:seqLen]
		for _, t := range toks[b][1:] {
			targets = append(targets, int64(t))
		}
	}
	in, err := MakeInputs(inputs, valid, m.device)
	if err != nil {
		return BenchResult{}, err
	}
	defer in.Drop()
	tgt := ToDevice(Int64Tensor(targets, int64(len(targets))), m.device)
	defer tgt.MustDrop()
	step := func() error {
		h, err := m.Forward(in, nil)
		if err != nil {
			return err
		}
		lg := m.Logits(h).MustView([]int64{-1, int64(cfg.VocabSize)}, true)
		h.MustDrop()
		loss := lg.MustCrossEntropyLoss(tgt, ts.NewTensor(), 1, -100, 0, true)
		err = opt.BackwardStep(loss)
		loss.MustDrop()
		return err
	}
	if err := step(); err != nil {
		return BenchResult{}, err
	}
	start := time.Now()
	for range steps {
		if err := step(); err != nil {
			return BenchResult{}, err
		}
	}
	m.Settle()
	el := time.Since(start).Seconds()
	n := steps * batch * seqLen
	return BenchResult{What: "train", Batch: batch, Tokens: n, Seconds: el, TokensPerSec: float64(n) / el}, nil
}

// MeasureGeneration times greedy decoding with the KV cache on device: a prompt of promptLen
// tokens per sequence (prefill, not timed), then newTokens decoding steps for the whole batch.
// Each step reads its tokens back to the host, as a server's does.
func MeasureGeneration(cfg Config, device gotch.Device, batch, promptLen, newTokens int) (BenchResult, error) {
	m, err := New(cfg, Options{Seed: 1, Device: device})
	if err != nil {
		return BenchResult{}, err
	}
	defer m.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	toks, valid := randomBatch(rng, batch, promptLen, cfg.VocabSize)
	cache := m.NewCache()
	defer cache.Drop()
	var res BenchResult
	var runErr error
	ts.NoGrad(func() {
		next, err := m.greedyStep(toks, valid, cache)
		if err != nil {
			runErr = err
			return
		}
		start := time.Now()
		for range newTokens {
			for b := range valid {
				valid[b] = append(valid[b], true)
			}
			if next, err = m.greedyStep(next, valid, cache); err != nil {
				runErr = err
				return
			}
		}
		el := time.Since(start).Seconds()
		n := batch * newTokens
		res = BenchResult{What: "generate", Batch: batch, Tokens: n, Seconds: el, TokensPerSec: float64(n) / el}
	})
	return res, runErr
}

// Settle waits until the model's device has finished the work queued on it, so that a clock read
// afterwards measures that work: CUDA runs kernels asynchronously. Copying one value of a weight to
// the host waits for the stream; on the CPU, work is already done and Settle returns at once.
func (m *Model) Settle() {
	if isCPU(m.device) {
		return
	}
	v := m.norm.MustNarrow(0, 0, 1, false)
	v.MustTo(gotch.CPU, true).MustDrop()
}

// greedyStep runs one forward step and returns each sequence's argmax next token.
func (m *Model) greedyStep(toks [][]int, valid [][]bool, cache *Cache) ([][]int, error) {
	in, err := MakeInputs(toks, valid, m.device)
	if err != nil {
		return nil, err
	}
	defer in.Drop()
	h, err := m.Forward(in, cache)
	if err != nil {
		return nil, err
	}
	T := int64(len(toks[0]))
	last := h.MustNarrow(1, T-1, 1, true)
	lg := m.Logits(last)
	last.MustDrop()
	am := lg.MustArgmax([]int64{-1}, false, true).MustTo(gotch.CPU, true)
	ids := am.Int64Values(true)
	next := make([][]int, len(ids))
	for b, id := range ids {
		next[b] = []int{int(id)}
	}
	return next, nil
}

func randomBatch(rng *rand.Rand, batch, n, vocab int) ([][]int, [][]bool) {
	toks := make([][]int, batch)
	valid := make([][]bool, batch)
	for b := range batch {
		toks[b] = make([]int, n)
		valid[b] = make([]bool, n)
		for i := range n {
			toks[b][i], valid[b][i] = rng.IntN(vocab), true
		}
	}
	return toks, valid
}

// String formats a result for logs.
func (r BenchResult) String() string {
	return fmt.Sprintf("%s batch %d: %.0f tokens/s", r.What, r.Batch, r.TokensPerSec)
}

// MeasureMatmul times n×n float32 matrix products on this machine's libtorch and returns FLOP/s,
// the ceiling that achieved model FLOP/s is compared with.
func MeasureMatmul(n, reps int) float64 {
	a := ts.MustOnes([]int64{int64(n), int64(n)}, gotch.Float, gotch.CPU)
	b := ts.MustOnes([]int64{int64(n), int64(n)}, gotch.Float, gotch.CPU)
	defer a.MustDrop()
	defer b.MustDrop()
	a.MustMatmul(b, false).MustDrop()
	start := time.Now()
	for range reps {
		a.MustMatmul(b, false).MustDrop()
	}
	return 2 * float64(n) * float64(n) * float64(n) * float64(reps) / time.Since(start).Seconds()
}

// FLOPsPerToken estimates the multiply-adds (×2) of decoding one token with ctx tokens of
// context: every weight matrix once (the LM head included), plus attention over the context.
func (c Config) FLOPsPerToken(ctx int) float64 {
	H, I, hd := float64(c.HiddenSize), float64(c.IntermediateSize), float64(c.HeadDim())
	q, kv := float64(c.NumAttentionHeads)*hd, float64(c.NumKeyValueHeads)*hd
	perLayer := H*q + 2*H*kv + q*H + 3*H*I
	weights := float64(c.NumHiddenLayers)*perLayer + float64(c.VocabSize)*H
	attention := float64(c.NumHiddenLayers) * 2 * float64(ctx) * q
	return 2 * (weights + attention)
}
