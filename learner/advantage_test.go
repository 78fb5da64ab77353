package learner

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestGAEByHand(t *testing.T) {
	// γ = 0.9, λ = 0.8, rewards [1, 0, 2], values [0.5, 0.4, 0.3]:
	// δ2 = 2 − 0.3 = 1.7;              A2 = 1.7
	// δ1 = 0 + 0.9·0.3 − 0.4 = −0.13;  A1 = −0.13 + 0.72·1.7 = 1.094
	// δ0 = 1 + 0.9·0.4 − 0.5 = 0.86;   A0 = 0.86 + 0.72·1.094 = 1.64768
	adv, ret, err := GAE([]float64{1, 0, 2}, []float64{0.5, 0.4, 0.3}, 0.9, 0.8)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{1.64768, 1.094, 1.7}
	for i := range want {
		if !near(adv[i], want[i]) || !near(ret[i], want[i]+[]float64{0.5, 0.4, 0.3}[i]) {
			t.Errorf("t=%d: A %v R %v, want A %v", i, adv[i], ret[i], want[i])
		}
	}
	// γ = λ = 1 with the reward on the last token: every advantage is return − value.
	adv, _, _ = GAE(TokenRewards(3, 4), []float64{1, 2, 0.5, -1}, 1, 1)
	for i, v := range []float64{1, 2, 0.5, -1} {
		if !near(adv[i], 3-v) {
			t.Errorf("γ=λ=1: A%d = %v, want %v", i, adv[i], 3-v)
		}
	}
	if _, _, err := GAE([]float64{1}, nil, 1, 1); err == nil {
		t.Error("mismatched lengths accepted")
	}
}

func TestWhitenByHand(t *testing.T) {
	x := []float64{1, 2, 3, 100}
	// Only the first three count: mean 2, population variance 2/3.
	if err := Whiten(x, []bool{true, true, true, false}); err != nil {
		t.Fatal(err)
	}
	s := math.Sqrt(2.0/3 + 1e-8)
	for i, want := range []float64{-1 / s, 0, 1 / s, 100} {
		if !near(x[i], want) {
			t.Errorf("x[%d] = %v, want %v", i, x[i], want)
		}
	}
}

func TestWhitenWeightedByHand(t *testing.T) {
	// Two sequences under a sequence-mean loss: A has 1 token (weight 1), B 3 tokens (weight 1/3
	// each). Values [4 | 0 0 0]: weighted mean (4 + 0)/2 = 2, weighted variance
	// (1·4 + 3·(1/3)·4)/2 = 4, std 2 → [1 | −1 −1 −1]. Unit weights would give mean 1 and leave
	// the loss's mean advantage at (1.73 − 0.58)/2 ≠ 0.
	x := []float64{4, 0, 0, 0}
	if err := WhitenWeighted(x, []float64{1, 1.0 / 3, 1.0 / 3, 1.0 / 3}); err != nil {
		t.Fatal(err)
	}
	s := math.Sqrt(4 + 1e-8)
	for i, want := range []float64{2 / s, -2 / s, -2 / s, -2 / s} {
		if !near(x[i], want) {
			t.Errorf("x[%d] = %v, want %v", i, x[i], want)
		}
	}
	if err := WhitenWeighted([]float64{1}, []float64{-1}); err == nil {
		t.Error("a negative weight was accepted")
	}
}

func TestFilterGroupsByHand(t *testing.T) {
	groups := []GroupStat{
		{"flat", []float64{1, 1, 1, 1}, 4},
		{"wide", []float64{0, 10, 0, 10}, 2},
		{"mid", []float64{0, 1, 0, 1}, 0},
		{"zero", []float64{0, 0, 0, 0}, 0},
	}
	for _, c := range []struct {
		filter GroupFilter
		keep   float64
		groups []GroupStat
		want   string
	}{
		{FilterStd, 0.25, groups, "[wide]"},
		{FilterStd, 0.5, groups, "[wide mid]"},
		{FilterStd, 1, groups, "[wide mid flat zero]"},
		{FilterStd, 0.25, groups[:1], "[flat]"}, // at least one group
		// A group with a solve is kept whatever its spread; an all-fail group is not, even when
		// its rewards differ (move costs).
		{FilterSuccess, 0.25, groups, "[wide flat]"},
		{FilterSuccess, 1, groups[2:], "[]"},
		{FilterNone, 0.25, groups, "[wide mid flat zero]"},
	} {
		if got := fmt.Sprint(FilterGroups(c.groups, c.filter, c.keep)); got != c.want {
			t.Errorf("%s keep %v: %s, want %s", c.filter, c.keep, got, c.want)
		}
	}
	if _, err := ParseGroupFilter("best"); err == nil {
		t.Error("an unknown filter was accepted")
	}
}

func TestGroupAdvantagesByHand(t *testing.T) {
	// rewards [0, 2, 4]: mean 2; sample std (verl's torch.std) sqrt(8/2) = 2; population std
	// sqrt(8/3) = 1.633; Dr.GRPO divides by nothing.
	for _, c := range []struct {
		norm GroupNorm
		want []float64
	}{
		{NormStd, []float64{-1, 0, 1}},
		{NormPopulationStd, []float64{-2 / math.Sqrt(8.0/3), 0, 2 / math.Sqrt(8.0/3)}},
		{NormNone, []float64{-2, 0, 2}},
	} {
		a := GroupAdvantages([]float64{0, 2, 4}, c.norm)
		for i := range a {
			if math.Abs(a[i]-c.want[i]) > 1e-5 {
				t.Errorf("%s: %v, want %v", c.norm, a, c.want)
				break
			}
		}
		for _, v := range GroupAdvantages([]float64{3, 3, 3}, c.norm) {
			if v != 0 {
				t.Errorf("%s: a flat group gave %v", c.norm, v)
			}
		}
	}
	// The case that taught the policy to act less: an all-fail group whose rewards differ only by
	// move costs. Divided by its std it is as loud as a solve; Dr.GRPO keeps it at the costs' size.
	fail := []float64{-0.3, -0.1, -0.2, -0.4}
	if a := GroupAdvantages(fail, NormStd); math.Abs(a[1]) < 1 {
		t.Errorf("std-normalised all-fail advantages %v, want magnitudes above 1", a)
	}
	if a := GroupAdvantages(fail, NormNone); math.Abs(a[1]-0.15) > 1e-9 {
		t.Errorf("Dr.GRPO all-fail advantage %v, want 0.15", a[1])
	}
	if _, err := ParseGroupNorm("max"); err == nil {
		t.Error("an unknown normalisation was accepted")
	}
}

func TestShuffleAndCompleteGroups(t *testing.T) {
	seqs := []Sequence{
		{Group: "a", Reward: 1, TurnRewards: []float64{0, 1}, Success: true},
		{Group: "a", Reward: 0, TurnRewards: []float64{0, 0}},
		{Group: "b", Reward: 5, TurnRewards: []float64{5}},
		{Group: "a", Reward: 2, TurnRewards: []float64{2}},
		{Group: "b", Reward: 7, TurnRewards: []float64{3, 4}},
	}
	// Shuffling permutes outcomes inside each group only: the multiset of each group's rewards
	// is kept, turn rewards still sum to the reward, and success travels with its reward.
	sum := func(x []float64) float64 {
		s := 0.0
		for _, v := range x {
			s += v
		}
		return s
	}
	moved := false
	for step := range uint64(20) {
		s := make([]Sequence, len(seqs))
		copy(s, seqs)
		shuffleRewards(s, 1, step)
		got := map[string]float64{}
		for i, q := range s {
			got[q.Group] += q.Reward
			if math.Abs(sum(q.TurnRewards)-q.Reward) > 1e-12 || len(q.TurnRewards) != len(seqs[i].TurnRewards) {
				t.Fatalf("step %d: sequence %d has turn rewards %v for reward %v", step, i, q.TurnRewards, q.Reward)
			}
			if q.Success != (q.Reward == 1) {
				t.Fatalf("step %d: success did not travel with its reward: %+v", step, q)
			}
			moved = moved || q.Reward != seqs[i].Reward
		}
		if got["a"] != 3 || got["b"] != 12 {
			t.Fatalf("step %d: group sums %v, want a 3 and b 12", step, got)
		}
	}
	if !moved {
		t.Error("20 shuffles never moved a reward")
	}
	kept, dropped := completeGroups(seqs, 3)
	if len(kept) != 3 || dropped != 1 || kept[0].Group != "a" || kept[2].Group != "a" {
		t.Errorf("complete groups of 3: kept %d (%v), dropped %d", len(kept), kept, dropped)
	}
}

func TestCheckSamplingRefusesTruncatedTrainingRollouts(t *testing.T) {
	ok := config.Default().Rollout
	if err := CheckSampling(ok.Temperature, ok.TopP, ok.TopK); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for name, change := range map[string]func(*config.Rollout){
		"top_p":  func(r *config.Rollout) { r.TopP = 0.9 },
		"top_k":  func(r *config.Rollout) { r.TopK = 20 },
		"greedy": func(r *config.Rollout) { r.Temperature = 0 },
	} {
		r := ok
		change(&r)
		if err := CheckSampling(r.Temperature, r.TopP, r.TopK); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestStepMetricsSplitWhatThePolicyDid(t *testing.T) {
	// Episode 1: a malformed turn (penalty), then two accepted moves and a solve worth 10.
	// Episode 2: one accepted and one rejected move in one turn (penalty), no solve.
	trajs := []*bus.Trajectory{
		{Success: true, Reward: -0.1 + 10 - 0.2, Turns: []bus.Turn{
			{FormatOK: false},
			{FormatOK: true, Actions: []string{"Up", "Left"}, Valid: []bool{true, true}},
		}},
		{Reward: -0.1 - 0.1, Turns: []bus.Turn{
			{FormatOK: true, Actions: []string{"Up", "Jump"}, Valid: []bool{true, false}},
		}},
	}
	var m PPOMetrics
	m.describe(trajs)
	for name, c := range map[string][2]float64{
		"success":        {m.Success, 0.5},
		"moves":          {m.Moves, 1.5},            // (2 + 1) / 2
		"turns":          {m.Turns, 1.5},            // (2 + 1) / 2
		"format errors":  {m.FormatErrors, 1.0 / 3}, // 1 malformed turn of 3
		"format penalty": {m.FormatPenalty, -0.1},   // 2 penalised turns over 2 episodes
		"env reward":     {m.EnvReward, (9.7-0.2)/2 + 0.1},
	} {
		if !near(c[0], c[1]) {
			t.Errorf("%s: %v, want %v", name, c[0], c[1])
		}
	}
}

// TestParseAdvantageAndLossAgg: the typed choices, their defaults, and errors that list them.
func TestParseAdvantageAndLossAgg(t *testing.T) {
	for s, want := range map[string]Advantage{"": AdvantageGAE, "gae": AdvantageGAE, "turn-gae": AdvantageTurnGAE, "grpo": AdvantageGRPO} {
		if got, err := ParseAdvantage(s); err != nil || got != want {
			t.Errorf("ParseAdvantage(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseAdvantage("ppo"); err == nil || !strings.Contains(err.Error(), "turn-gae") {
		t.Errorf("unknown advantage: %v", err)
	}
	if AdvantageGRPO.UsesCritic() || !AdvantageTurnGAE.UsesCritic() || !AdvantageGAE.UsesCritic() {
		t.Error("which estimators use a critic")
	}
	for s, want := range map[string]LossAgg{"": LossTokenMean, "token-mean": LossTokenMean, "seq-mean-token-mean": LossSeqMeanTokenMean} {
		if got, err := ParseLossAgg(s); err != nil || got != want {
			t.Errorf("ParseLossAgg(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseLossAgg("sum"); err == nil {
		t.Error("unknown loss aggregation accepted")
	}
}
