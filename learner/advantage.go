// Package learner turns trajectories into better weights: world-model SFT and PPO in gotch, and
// the advantage estimation around them. This file holds the parts that need no tensors: GAE,
// whitening and rollout filtering, one function per equation of docs/method.md's "Pipeline", each tested on
// hand-computed examples.
package learner

import (
	"fmt"
	"math"
	"sort"

	"github.com/spa-rl/spa/internal/choice"
)

// GAE computes generalised advantage estimates and returns for one sequence of T positions
// (Schulman et al. 2016), with the episode ending after the last position:
//
//	δ_t = r_t + γ V_{t+1} − V_t          (V_T = 0)
//	A_t = δ_t + γ λ A_{t+1}              (A_T = 0)
//	R_t = A_t + V_t
//
// In token-level PPO the positions are the response tokens of an episode, in order, and the
// reward sits on the last token (docs/method.md); with γ = λ = 1 every token's advantage is the episode
// return minus its value.
func GAE(rewards, values []float64, gamma, lambda float64) (adv, ret []float64, err error) {
	if len(rewards) != len(values) {
		return nil, nil, fmt.Errorf("gae: %d rewards and %d values", len(rewards), len(values))
	}
	T := len(rewards)
	adv, ret = make([]float64, T), make([]float64, T)
	next, nextValue := 0.0, 0.0
	for t := T - 1; t >= 0; t-- {
		delta := rewards[t] + gamma*nextValue - values[t]
		next = delta + gamma*lambda*next
		adv[t] = next
		ret[t] = next + values[t]
		nextValue = values[t]
	}
	return adv, ret, nil
}

// Whiten normalises values to zero mean and unit variance over the positions where mask is true
// (all when mask is nil), in place, as verl does over a batch: (x − mean) / sqrt(var + 1e-8),
// with the population variance. Masked-out positions are left unchanged.
func Whiten(x []float64, mask []bool) error {
	if mask != nil && len(mask) != len(x) {
		return fmt.Errorf("whiten: %d values and %d mask entries", len(x), len(mask))
	}
	w := make([]float64, len(x))
	for i := range w {
		if mask == nil || mask[i] {
			w[i] = 1
		}
	}
	return WhitenWeighted(x, w)
}

// WhitenWeighted is Whiten with a weight per position: the mean and variance are weighted by w,
// and positions of weight 0 are left unchanged. Weighting positions as the loss weighs them
// keeps the loss's mean advantage at zero: with a sequence-mean loss every token of a sequence of
// n tokens weighs 1/n, and whitening with unit weights would leave longer sequences' advantages
// over-counted in the mean (a small positive or negative bias in every update).
func WhitenWeighted(x, w []float64) error {
	if len(w) != len(x) {
		return fmt.Errorf("whiten: %d values and %d weights", len(x), len(w))
	}
	sw, sum := 0.0, 0.0
	for i, v := range x {
		if w[i] < 0 {
			return fmt.Errorf("whiten: weight %d is %v", i, w[i])
		}
		sw += w[i]
		sum += w[i] * v
	}
	if sw == 0 {
		return nil
	}
	mean := sum / sw
	ss := 0.0
	for i, v := range x {
		ss += w[i] * (v - mean) * (v - mean)
	}
	std := math.Sqrt(ss/sw + 1e-8)
	for i, v := range x {
		if w[i] > 0 {
			x[i] = (v - mean) / std
		}
	}
	return nil
}

// TokenRewards places an episode's total reward on its last response token (docs/method.md: "reward =
// sum of turn rewards and format penalties, on the last token"); n is the number of response
// tokens across the episode.
func TokenRewards(total float64, n int) []float64 {
	r := make([]float64, n)
	if n > 0 {
		r[n-1] = total
	}
	return r
}

// GroupStat is a group of episodes that share a seed, by its rewards.
type GroupStat struct {
	Group   string
	Rewards []float64
	// Successes counts the group's successful episodes (FilterSuccess).
	Successes int
}

// Std is the population standard deviation of the group's rewards.
func (g GroupStat) Std() float64 { return std(g.Rewards, 0) }

// std is the standard deviation of x with ddof delta degrees of freedom (0: population, 1:
// sample); a group too small for ddof has 0.
func std(x []float64, ddof int) float64 {
	if len(x) <= ddof {
		return 0
	}
	m := mean(x)
	ss := 0.0
	for _, r := range x {
		ss += (r - m) * (r - m)
	}
	return math.Sqrt(ss / float64(len(x)-ddof))
}

func mean(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// GroupFilter is how a step picks the groups it trains on.
type GroupFilter string

const (
	// FilterNone keeps every group.
	FilterNone GroupFilter = "none"
	// FilterStd keeps the share of groups with the highest in-group reward std (the paper's top
	// 25%, learner.ppo.keep_group_ratio).
	FilterStd GroupFilter = "std"
	// FilterSuccess keeps the groups in which at least one episode succeeded: the groups that
	// carry the signal of a solve, so that differences in move costs alone never drive an update.
	FilterSuccess GroupFilter = "success"
)

// ParseGroupFilter accepts the GroupFilter names; empty means FilterStd.
func ParseGroupFilter(s string) (GroupFilter, error) {
	return choice.Parse("group filter", s, FilterStd, FilterNone, FilterStd, FilterSuccess)
}

// Advantage is an advantage estimator.
type Advantage string

const (
	// AdvantageGAE is token-level GAE with the episode's reward on its last token (a critic).
	AdvantageGAE Advantage = "gae"
	// AdvantageTurnGAE is bi-level GAE: each turn's reward on its last token, discounted by γ
	// and λ between turns only (a critic).
	AdvantageTurnGAE Advantage = "turn-gae"
	// AdvantageGRPO is the group-normalised episode reward, with no critic.
	AdvantageGRPO Advantage = "grpo"
)

// ParseAdvantage accepts the Advantage names; empty means AdvantageGAE.
func ParseAdvantage(s string) (Advantage, error) {
	return choice.Parse("advantage", s, AdvantageGAE, AdvantageGAE, AdvantageTurnGAE, AdvantageGRPO)
}

// UsesCritic reports whether the estimator needs a value model.
func (a Advantage) UsesCritic() bool { return a != AdvantageGRPO }

// LossAgg is how the policy loss averages over tokens.
type LossAgg string

const (
	// LossTokenMean weighs every token the same, so long responses weigh more (the paper's).
	LossTokenMean LossAgg = "token-mean"
	// LossSeqMeanTokenMean weighs each trajectory the same: the mean of its tokens' losses.
	LossSeqMeanTokenMean LossAgg = "seq-mean-token-mean"
)

// ParseLossAgg accepts the LossAgg names; empty means LossTokenMean.
func ParseLossAgg(s string) (LossAgg, error) {
	return choice.Parse("loss aggregation", s, LossTokenMean, LossTokenMean, LossSeqMeanTokenMean)
}

// FilterGroups returns the names of the groups f keeps, in order of decreasing reward std (ties
// by name, so the choice is deterministic). For FilterStd it keeps the share keep, at least one
// group: groups whose episodes all scored the same teach nothing to a group-relative advantage.
// FilterSuccess may keep none.
func FilterGroups(groups []GroupStat, f GroupFilter, keep float64) []string {
	sorted := append([]GroupStat(nil), groups...)
	sort.Slice(sorted, func(i, j int) bool {
		si, sj := sorted[i].Std(), sorted[j].Std()
		if si != sj {
			return si > sj
		}
		return sorted[i].Group < sorted[j].Group
	})
	n := len(sorted)
	switch f {
	case FilterStd, "":
		if keep > 0 && keep < 1 && n > 0 {
			n = max(1, int(math.Ceil(keep*float64(n))))
		}
	case FilterSuccess:
		kept := sorted[:0]
		for _, g := range sorted {
			if g.Successes > 0 {
				kept = append(kept, g)
			}
		}
		sorted, n = kept, len(kept)
	}
	out := make([]string, n)
	for i := range n {
		out[i] = sorted[i].Group
	}
	return out
}

// GroupNorm is how GRPO scales a group's centred rewards.
type GroupNorm string

const (
	// NormStd divides by the group's sample standard deviation (n − 1 degrees of freedom) plus
	// 1e-6, as verl computes it (torch.std).
	NormStd GroupNorm = "std"
	// NormPopulationStd divides by the population standard deviation plus 1e-6 (spa before
	// verl's convention was adopted).
	NormPopulationStd GroupNorm = "population-std"
	// NormNone does not divide: Dr.GRPO (Liu et al. 2025; verl's norm_adv_by_std_in_grpo=False).
	// A group whose rewards differ only by move costs then gets advantages of that size, not ±1
	// like a group that differs by a solve.
	NormNone GroupNorm = "none"
)

// ParseGroupNorm accepts the GroupNorm names; empty means NormStd.
func ParseGroupNorm(s string) (GroupNorm, error) {
	return choice.Parse("group normalisation", s, NormStd, NormStd, NormPopulationStd, NormNone)
}

// GroupAdvantages is GRPO's critic-free advantage: each episode's reward minus its group's mean,
// divided as norm says; a group with no spread gives zeros.
func GroupAdvantages(rewards []float64, norm GroupNorm) []float64 {
	m := mean(rewards)
	div := 1.0
	switch norm {
	case NormStd, "":
		div = std(rewards, 1) + 1e-6
	case NormPopulationStd:
		div = std(rewards, 0) + 1e-6
	}
	out := make([]float64, len(rewards))
	for i, r := range rewards {
		out[i] = (r - m) / div
	}
	return out
}
