package learner

import (
	"errors"
	"fmt"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/model"
)

// Sequence is one training sample laid out as the learner sees it: the tokens in order, and for
// each token whether it is trained on. PPO samples also carry the behaviour logprobs and the
// turn of each trained token; SFT samples leave them empty.
type Sequence struct {
	IDs []int
	// Train marks the tokens the loss covers (the assistant's tokens). The first token is never
	// trained on: nothing predicts it.
	Train []bool
	// OldLogp holds, for each trained token in order, the logprob it was sampled with.
	OldLogp []float64
	// Turn holds, for each trained token in order, the index of its turn; TurnRewards each turn's
	// reward (environment plus format penalty).
	Turn        []int
	TurnRewards []float64
	// Reward is the episode's total reward; Group the group it was played in; Version the policy
	// version that sampled it.
	Reward  float64
	Group   string
	Version int64
	Success bool
}

// Targets lists the indices of the trained tokens.
func (s Sequence) Targets() []int {
	var out []int
	for i, t := range s.Train {
		if t && i > 0 {
			out = append(out, i)
		}
	}
	return out
}

// ErrNoTokens marks a trajectory that cannot be trained on: it was played in chat mode, so the
// sampled token ids are unknown, and retokenising text would train on tokens that were never sampled.
var ErrNoTokens = errors.New("trajectory has no token ids (chat mode); the learner trains on token-mode trajectories only")

// FromTrajectory lays a token-mode trajectory out as one sequence: each turn's prompt delta, then
// its response, in order; the response tokens whose loss mask is 1 are trained on.
func FromTrajectory(t *bus.Trajectory) (Sequence, error) {
	s := Sequence{Reward: t.Reward, Group: t.Group, Version: t.PolicyVersion, Success: t.Success}
	for k, turn := range t.Turns {
		if len(turn.PromptIDs) == 0 && len(turn.ResponseIDs) == 0 {
			return Sequence{}, fmt.Errorf("trajectory %s: %w", t.ID, ErrNoTokens)
		}
		for _, id := range turn.PromptIDs {
			s.IDs = append(s.IDs, int(id))
			s.Train = append(s.Train, false)
		}
		for j, id := range turn.ResponseIDs {
			train := turn.LossMask[j] == 1 && len(s.IDs) > 0
			s.IDs = append(s.IDs, int(id))
			s.Train = append(s.Train, train)
			if train {
				s.OldLogp = append(s.OldLogp, float64(turn.Logprobs[j]))
				s.Turn = append(s.Turn, k)
			}
		}
		s.TurnRewards = append(s.TurnRewards, turn.Reward)
	}
	if len(s.OldLogp) == 0 {
		return Sequence{}, fmt.Errorf("trajectory %s: no trained tokens: %w", t.ID, ErrNoTokens)
	}
	return s, nil
}

// packed is a batch of sequences as one forward pass: the inputs (every sequence but its last
// token, left-padded), and the flat positions whose next-token prediction is trained.
type packed struct {
	in model.Inputs
	// index [N] selects, from the forward's [B·T] positions, the one before each trained token.
	index *ts.Tensor
	// targets [N] are the trained tokens.
	targets *ts.Tensor
	// n is N; counts[b] is how many of the N belong to sequence b.
	n      int
	counts []int
}

func (p packed) drop() {
	p.in.Drop()
	p.index.MustDrop()
	p.targets.MustDrop()
}

// pack lays seqs out for one forward pass on device.
func pack(seqs []Sequence, device gotch.Device) (packed, error) {
	if len(seqs) == 0 {
		return packed{}, errors.New("pack: no sequences")
	}
	T := 0
	for _, s := range seqs {
		if len(s.IDs) < 2 {
			return packed{}, fmt.Errorf("pack: a sequence of %d tokens has nothing to predict", len(s.IDs))
		}
		T = max(T, len(s.IDs)-1)
	}
	tokens := make([][]int, len(seqs))
	valid := make([][]bool, len(seqs))
	var index, targets []int64
	counts := make([]int, len(seqs))
	for b, s := range seqs {
		L := len(s.IDs) - 1
		pad := T - L
		tokens[b] = make([]int, T)
		valid[b] = make([]bool, T)
		copy(tokens[b][pad:], s.IDs[:L])
		for i := pad; i < T; i++ {
			valid[b][i] = true
		}
		for _, j := range s.Targets() {
			index = append(index, int64(b*T+pad+j-1))
			targets = append(targets, int64(s.IDs[j]))
			counts[b]++
		}
	}
	if len(index) == 0 {
		return packed{}, errors.New("pack: no trained tokens")
	}
	in, err := model.MakeInputs(tokens, valid, device)
	if err != nil {
		return packed{}, err
	}
	n := int64(len(index))
	return packed{
		in:      in,
		index:   model.ToDevice(model.Int64Tensor(index, n), device),
		targets: model.ToDevice(model.Int64Tensor(targets, n), device),
		n:       len(index),
		counts:  counts,
	}, nil
}

// hidden runs m over the batch and returns the final hidden states at the selected positions, [N, hidden].
func (p packed) hidden(m *model.Model) (*ts.Tensor, error) {
	h, err := m.Forward(p.in, nil)
	if err != nil {
		return nil, err
	}
	flat := h.MustView([]int64{-1, int64(m.Config.HiddenSize)}, true)
	out := flat.MustIndexSelect(0, p.index, false)
	flat.MustDrop()
	return out, nil
}

// logits is m's next-token logits at the selected positions, [N, vocab], divided by temperature
// when it is not 1 (the sampler's logprobs are under the temperature-scaled distribution).
func (p packed) logits(m *model.Model, temperature float64) (*ts.Tensor, error) {
	h, err := p.hidden(m)
	if err != nil {
		return nil, err
	}
	l := m.Logits(h)
	h.MustDrop()
	if temperature > 0 && temperature != 1 {
		l = l.MustDivScalar(ts.FloatScalar(temperature), true)
	}
	return l, nil
}

// split cuts xs into consecutive runs whose sizes are counts.
func split[T any](xs []T, counts []int) [][]T {
	out := make([][]T, len(counts))
	at := 0
	for i, c := range counts {
		out[i] = xs[at : at+c]
		at += c
	}
	return out
}

// float32s converts for tensor construction.
func float32s(xs []float64) []float32 {
	out := make([]float32, len(xs))
	for i, x := range xs {
		out[i] = float32(x)
	}
	return out
}

// vector makes a [len(xs)] float tensor on device.
func vector(xs []float64, device gotch.Device) *ts.Tensor {
	return model.ToDevice(model.Float32Tensor(float32s(xs), int64(len(xs))), device)
}

// chunks cuts 0..n into consecutive ranges of at most size.
func chunks(n, size int) [][2]int {
	if size <= 0 {
		size = n
	}
	var out [][2]int
	for at := 0; at < n; at += size {
		out = append(out, [2]int{at, min(n, at+size)})
	}
	return out
}
