// Package sample draws tokens from next-token logits: greedy, temperature, top-k and top-p
// (nucleus), with a seeded generator and the logprob of each draw. It works on plain slices, so
// it is shared by the embedded server and tests, and needs no libtorch.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Params choose how to sample, as the OpenAI/vLLM request fields do.
type Params struct {
	// Temperature divides the logits; 0 means greedy.
	Temperature float64
	// TopP keeps the smallest set of most likely tokens whose probability reaches TopP; 0 or 1
	// keeps all.
	TopP float64
	// TopK keeps the K most likely tokens; 0 or -1 keeps all.
	TopK int
}

// Check reports parameter values no sampler accepts.
func (p Params) Check() error {
	switch {
	case p.Temperature < 0 || math.IsNaN(p.Temperature):
		return fmt.Errorf("temperature must be >= 0, got %v", p.Temperature)
	case p.TopP < 0 || p.TopP > 1 || math.IsNaN(p.TopP):
		return fmt.Errorf("top_p must be in (0, 1], got %v", p.TopP)
	case p.TopK < -1:
		return fmt.Errorf("top_k must be -1, 0 or positive, got %d", p.TopK)
	}
	return nil
}

// Sampler draws tokens. It is not safe for concurrent use; give each sequence its own, seeded
// from the request's seed, so a seeded request is reproducible whatever else is in the batch.
type Sampler struct {
	rng *rand.Rand
	idx []int
}

// New makes a sampler seeded with seed.
func New(seed uint64) *Sampler {
	return &Sampler{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Sample draws one token from logits and returns it with its logprob. The logprob is under the
// temperature-scaled distribution over the whole vocabulary, before top-k/top-p truncation (at
// temperature 0, under the unscaled one): the quantity a learner recomputes from the same
// logits, which is what PPO's importance ratio needs.
func (s *Sampler) Sample(logits []float32, p Params) (int, float64) {
	if p.Temperature == 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best, LogProb(logits, best, 1)
	}
	t := p.Temperature
	top := math.Inf(-1)
	for _, v := range logits {
		top = math.Max(top, float64(v))
	}
	// Probabilities under the scaled distribution (unnormalised, then normalised).
	probs := make([]float64, len(logits))
	sum := 0.0
	for i, v := range logits {
		probs[i] = math.Exp((float64(v) - top) / t)
		sum += probs[i]
	}
	logSum := math.Log(sum)
	keep := len(logits)
	truncate := (p.TopK > 0 && p.TopK < len(logits)) || (p.TopP > 0 && p.TopP < 1)
	if truncate {
		s.idx = s.idx[:0]
		for i := range logits {
			s.idx = append(s.idx, i)
		}
		// Ties keep the lower token id first, so truncation does not depend on sort internals.
		sort.SliceStable(s.idx, func(a, b int) bool { return probs[s.idx[a]] > probs[s.idx[b]] })
		if p.TopK > 0 && p.TopK < keep {
			keep = p.TopK
		}
		if p.TopP > 0 && p.TopP < 1 {
			cum := 0.0
			for i := 0; i < keep; i++ {
				cum += probs[s.idx[i]] / sum
				if cum >= p.TopP {
					keep = i + 1
					break
				}
			}
		}
	}
	var chosen int
	if truncate {
		mass := 0.0
		for _, i := range s.idx[:keep] {
			mass += probs[i]
		}
		u := s.rng.Float64() * mass
		chosen = s.idx[keep-1]
		for _, i := range s.idx[:keep] {
			if u -= probs[i]; u < 0 {
				chosen = i
				break
			}
		}
	} else {
		u := s.rng.Float64() * sum
		chosen = len(logits) - 1
		for i, q := range probs {
			if u -= q; u < 0 {
				chosen = i
				break
			}
		}
	}
	return chosen, (float64(logits[chosen])-top)/t - logSum
}

// LogProb is log softmax(logits / temperature)[token].
func LogProb(logits []float32, token int, temperature float64) float64 {
	top := math.Inf(-1)
	for _, v := range logits {
		top = math.Max(top, float64(v))
	}
	sum := 0.0
	for _, v := range logits {
		sum += math.Exp((float64(v) - top) / temperature)
	}
	return (float64(logits[token])-top)/temperature - math.Log(sum)
}

// TopLogProbs returns the n most likely tokens and their logprobs, most likely first, under the
// same distribution as Sample's logprob: softmax(logits / temperature), or the unscaled one at
// temperature 0. A response's top_logprobs and its sampled token's logprob are thus one
// distribution, and the sampled token's entry among the alternatives equals its own logprob.
func TopLogProbs(logits []float32, n int, temperature float64) ([]int, []float64) {
	if temperature <= 0 {
		temperature = 1
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	n = min(n, len(idx))
	lps := make([]float64, n)
	for i := range n {
		lps[i] = LogProb(logits, idx[i], temperature)
	}
	return idx[:n], lps
}
