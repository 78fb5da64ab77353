package sample

import (
	"math"
	"testing"
)

var logits = []float32{1.0, 3.0, 2.0, -1.0, 3.0}

func TestGreedyPicksTheFirstMaximum(t *testing.T) {
	tok, lp := New(1).Sample(logits, Params{})
	// exp(3)/(e^1 + 2e^3 + e^2 + e^-1) by hand: 20.0855/(2.7183+40.1711+7.3891+0.3679) = 0.39658
	if tok != 1 || math.Abs(lp-math.Log(0.396583)) > 1e-5 {
		t.Errorf("greedy = %d, %v", tok, lp)
	}
	if tok, _ := New(2).Sample(logits, Params{Temperature: 0.7, TopK: 1}); tok != 1 {
		t.Errorf("top_k=1 sampled %d, want the first maximum", tok)
	}
}

func TestSeededDrawsRepeat(t *testing.T) {
	a, b := New(42), New(42)
	for range 100 {
		x, _ := a.Sample(logits, Params{Temperature: 1})
		y, _ := b.Sample(logits, Params{Temperature: 1})
		if x != y {
			t.Fatal("same seed, different draws")
		}
	}
}

// TestFrequenciesMatchSoftmax draws many tokens and compares the frequencies with
// softmax(logits/T), and checks that the reported logprob is that distribution's.
func TestFrequenciesMatchSoftmax(t *testing.T) {
	const n = 200_000
	for _, temp := range []float64{0.5, 1, 2} {
		s := New(7)
		counts := make([]int, len(logits))
		for range n {
			tok, lp := s.Sample(logits, Params{Temperature: temp})
			counts[tok]++
			if want := LogProb(logits, tok, temp); math.Abs(lp-want) > 1e-12 {
				t.Fatalf("logprob %v, want %v", lp, want)
			}
		}
		for i, c := range counts {
			p := math.Exp(LogProb(logits, i, temp))
			got := float64(c) / n
			if sd := math.Sqrt(p * (1 - p) / n); math.Abs(got-p) > 5*sd+1e-4 {
				t.Errorf("T=%v token %d: frequency %.4f, softmax %.4f", temp, i, got, p)
			}
		}
	}
}

func TestTopKAndTopPTruncate(t *testing.T) {
	s := New(3)
	for range 5000 {
		if tok, _ := s.Sample(logits, Params{Temperature: 1, TopK: 2}); tok != 1 && tok != 4 {
			t.Fatalf("top_k=2 sampled %d", tok)
		}
		// p(1)=p(4)=0.397 each: top_p 0.5 needs both, 0.3 only the first.
		if tok, _ := s.Sample(logits, Params{Temperature: 1, TopP: 0.5}); tok != 1 && tok != 4 {
			t.Fatalf("top_p=0.5 sampled %d", tok)
		}
		if tok, _ := s.Sample(logits, Params{Temperature: 1, TopP: 0.3}); tok != 1 {
			t.Fatalf("top_p=0.3 sampled %d", tok)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, p := range []Params{{Temperature: -1}, {TopP: 1.5}, {TopP: -0.1}, {TopK: -2}, {Temperature: math.NaN()}} {
		if p.Check() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	if err := (Params{Temperature: 1, TopP: 1, TopK: -1}).Check(); err != nil {
		t.Error(err)
	}
}

func TestTopLogProbs(t *testing.T) {
	ids, lps := TopLogProbs(logits, 3, 1)
	if ids[0] != 1 || ids[1] != 4 || ids[2] != 2 || lps[0] != lps[1] || lps[2] >= lps[1] {
		t.Errorf("top logprobs %v %v", ids, lps)
	}
}

// TestTopLogProbsShareTheSampledDistribution: at every temperature, the sampled token's logprob
// is the one its entry among the alternatives shows (they once disagreed away from T = 1).
func TestTopLogProbsShareTheSampledDistribution(t *testing.T) {
	for _, temp := range []float64{0, 0.3, 1, 2.5} {
		s := New(7)
		for range 50 {
			tok, lp := s.Sample(logits, Params{Temperature: temp, TopP: 1, TopK: -1})
			ids, lps := TopLogProbs(logits, len(logits), temp)
			for k, id := range ids {
				if id == tok && math.Abs(lps[k]-lp) > 1e-12 {
					t.Fatalf("temperature %v: token %d has logprob %v, its top_logprobs entry %v", temp, tok, lp, lps[k])
				}
			}
		}
	}
}
