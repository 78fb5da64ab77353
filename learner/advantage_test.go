package learner

import (
	"fmt"
	"math"
	"testing"
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

func TestFilterGroupsKeepsHighestSpread(t *testing.T) {
	groups := []GroupStat{
		{"flat", []float64{1, 1, 1, 1}},
		{"wide", []float64{0, 10, 0, 10}},
		{"mid", []float64{0, 1, 0, 1}},
		{"zero", []float64{0, 0, 0, 0}},
	}
	if got := fmt.Sprint(FilterGroups(groups, 0.25)); got != "[wide]" {
		t.Errorf("top 25%%: %s", got)
	}
	if got := fmt.Sprint(FilterGroups(groups, 0.5)); got != "[wide mid]" {
		t.Errorf("top 50%%: %s", got)
	}
	if got := fmt.Sprint(FilterGroups(groups[:1], 0.25)); got != "[flat]" {
		t.Errorf("at least one group: %s", got)
	}
}

func TestGroupAdvantages(t *testing.T) {
	// rewards [0, 2]: mean 1, std 1 → [−1, 1] (up to eps).
	a := GroupAdvantages([]float64{0, 2})
	if math.Abs(a[0]+1) > 1e-5 || math.Abs(a[1]-1) > 1e-5 {
		t.Errorf("%v", a)
	}
	for _, v := range GroupAdvantages([]float64{3, 3, 3}) {
		if v != 0 {
			t.Errorf("a flat group gave %v", v)
		}
	}
}
