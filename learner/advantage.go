// Package learner turns trajectories into better weights: world-model SFT and PPO in gotch, and
// the advantage estimation around them. This file holds the parts that need no tensors: GAE,
// whitening and rollout filtering, one function per equation of SPA.md's "Pipeline", each tested on
// hand-computed examples.
package learner

import (
	"fmt"
	"math"
	"sort"
)

// GAE computes generalised advantage estimates and returns for one sequence of T positions
// (Schulman et al. 2016), with the episode ending after the last position:
//
//	δ_t = r_t + γ V_{t+1} − V_t          (V_T = 0)
//	A_t = δ_t + γ λ A_{t+1}              (A_T = 0)
//	R_t = A_t + V_t
//
// In token-level PPO the positions are the response tokens of an episode, in order, and the
// reward sits on the last token (SPA.md); with γ = λ = 1 every token's advantage is the episode
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
	n, sum := 0, 0.0
	for i, v := range x {
		if mask == nil || mask[i] {
			n++
			sum += v
		}
	}
	if n == 0 {
		return nil
	}
	mean := sum / float64(n)
	ss := 0.0
	for i, v := range x {
		if mask == nil || mask[i] {
			ss += (v - mean) * (v - mean)
		}
	}
	std := math.Sqrt(ss/float64(n) + 1e-8)
	for i, v := range x {
		if mask == nil || mask[i] {
			x[i] = (v - mean) / std
		}
	}
	return nil
}

// TokenRewards places an episode's total reward on its last response token (SPA.md: "reward =
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
}

// Std is the population standard deviation of the group's rewards.
func (g GroupStat) Std() float64 {
	if len(g.Rewards) == 0 {
		return 0
	}
	m := 0.0
	for _, r := range g.Rewards {
		m += r
	}
	m /= float64(len(g.Rewards))
	ss := 0.0
	for _, r := range g.Rewards {
		ss += (r - m) * (r - m)
	}
	return math.Sqrt(ss / float64(len(g.Rewards)))
}

// FilterGroups keeps the share of groups with the highest in-group reward standard deviation
// (SPA.md: the top 25%), at least one group, and returns their names in order of decreasing std
// (ties by name, so the choice is deterministic). Groups whose episodes all scored the same teach
// nothing to a group-relative advantage and little to PPO.
func FilterGroups(groups []GroupStat, keep float64) []string {
	if keep <= 0 || keep > 1 || len(groups) == 0 {
		keep = 1
	}
	sorted := append([]GroupStat(nil), groups...)
	sort.Slice(sorted, func(i, j int) bool {
		si, sj := sorted[i].Std(), sorted[j].Std()
		if si != sj {
			return si > sj
		}
		return sorted[i].Group < sorted[j].Group
	})
	n := max(1, int(math.Ceil(keep*float64(len(sorted)))))
	out := make([]string, n)
	for i := range n {
		out[i] = sorted[i].Group
	}
	return out
}

// GroupAdvantages is GRPO's critic-free advantage: each episode's reward minus its group's mean,
// divided by the group's standard deviation (plus eps); a group with no spread gives zeros.
func GroupAdvantages(rewards []float64) []float64 {
	g := GroupStat{Rewards: rewards}
	std := g.Std()
	mean := 0.0
	for _, r := range rewards {
		mean += r
	}
	if len(rewards) > 0 {
		mean /= float64(len(rewards))
	}
	out := make([]float64, len(rewards))
	for i, r := range rewards {
		out[i] = (r - mean) / (std + 1e-6)
	}
	return out
}
