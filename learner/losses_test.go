package learner

import (
	"math"
	"runtime"
	"testing"

	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/torchrt"
)

func TestMain(m *testing.M) { torchrt.RunTests(m) }

func lock(t *testing.T) {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
}

func vec(xs ...float64) *ts.Tensor {
	f := make([]float32, len(xs))
	for i, x := range xs {
		f[i] = float32(x)
	}
	return model.Float32Tensor(f, int64(len(f)))
}

func scalar(t *ts.Tensor) float64 { return t.Float64Values()[0] }

func TestPolicyLossByHand(t *testing.T) {
	lock(t)
	logp := vec(0, math.Log(1.5), math.Log(0.5), math.Log(5), math.Log(10))
	old := vec(0, 0, 0, 0, 0)
	adv := vec(2, 1, -1, -1, 5)
	neg := vec(0, 0, 1, 1, 0)
	mask := vec(1, 1, 1, 1, 0)
	loss, clipFrac, kl := PolicyLoss(logp, old, adv, neg, mask, PolicyLossOptions{ClipLow: 0.2, ClipHigh: 0.28, DualClip: 3})
	// Per token: −2; −1.28 (clipped high); 0.8 (clipped low); 3 (dual clip of 5); masked.
	if got, want := scalar(loss), (-2-1.28+0.8+3)/4.0; math.Abs(got-want) > 1e-6 {
		t.Errorf("loss %v, want %v", got, want)
	}
	if math.Abs(clipFrac-0.75) > 1e-9 {
		t.Errorf("clip fraction %v, want 0.75", clipFrac)
	}
	if want := (-math.Log(1.5) - math.Log(0.5) - math.Log(5)) / 4; math.Abs(kl-want) > 1e-6 {
		t.Errorf("approx KL %v, want %v", kl, want)
	}
	// Without dual clip the fourth token costs 5.
	loss2, _, _ := PolicyLoss(logp, old, adv, neg, mask, PolicyLossOptions{ClipLow: 0.2, ClipHigh: 0.28})
	if got, want := scalar(loss2), (-2-1.28+0.8+5)/4.0; math.Abs(got-want) > 1e-6 {
		t.Errorf("no dual clip: %v, want %v", got, want)
	}
}

func TestValueLossByHand(t *testing.T) {
	lock(t)
	// t0: max((1−0)², (0.5−0)²) = 1; t1: max((2−3)², (0.5−3)²) = 6.25; halves, mean: 1.8125.
	got := scalar(ValueLoss(vec(1, 2, 9), vec(0, 0, 0), vec(0, 3, 0), vec(1, 1, 0), 0.5))
	if math.Abs(got-1.8125) > 1e-6 {
		t.Errorf("value loss %v, want 1.8125", got)
	}
}

func TestSFTLossIgnoresMaskedTokens(t *testing.T) {
	lock(t)
	logits := func(last float32) *ts.Tensor {
		return model.Float32Tensor([]float32{2, 0, 0, 1, 1, 1, 0, last, 3, 5, 5, 5}, 4, 3)
	}
	targets := func(last int64) *ts.Tensor { return model.Int64Tensor([]int64{0, 2, 1, last}, 4) }
	mask := vec(1, 1, 0, 0)
	a := scalar(SFTLoss(logits(0), targets(0), mask))
	b := scalar(SFTLoss(logits(7), targets(2), mask))
	// By hand: −log softmax([2,0,0])[0] and −log softmax([1,1,1])[2], averaged.
	want := (-(2 - math.Log(math.Exp(2)+2)) + math.Log(3)) / 2
	if math.Abs(a-want) > 1e-5 || a != b {
		t.Errorf("SFT loss %v and %v after changing masked tokens; want %v for both", a, b, want)
	}
	if h := scalar(Entropy(model.Float32Tensor([]float32{1, 1, 1, 1}, 1, 4), vec(1))); math.Abs(h-math.Log(4)) > 1e-6 {
		t.Errorf("entropy of a uniform distribution %v, want ln 4", h)
	}
}

// TestLengthSortedMicroBatchesKeepTheLoss checks that sorting a batch by length before cutting it
// into micro-batches (less padding) leaves the token-mean loss as one forward pass computes it.
func TestLengthSortedMicroBatchesKeepTheLoss(t *testing.T) {
	lock(t)
	cfg, err := model.Preset("tiny", 64)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(cfg, model.Options{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var seqs []Sequence
	for i, n := range []int{5, 40, 9, 33, 12, 27} {
		s := Sequence{IDs: make([]int, n), Train: make([]bool, n)}
		for j := range n {
			s.IDs[j] = (i*7 + j*3) % 64
			s.Train[j] = j >= n/2
		}
		seqs = append(seqs, s)
	}
	sorted := byLength(seqs, 2)
	for i := 1; i < len(sorted); i++ {
		if len(sorted[i].IDs) > len(sorted[i-1].IDs) {
			t.Fatalf("not longest first: %d then %d", len(sorted[i-1].IDs), len(sorted[i].IDs))
		}
	}
	if len(seqs[0].IDs) != 5 {
		t.Fatal("byLength reordered its argument")
	}
	whole, err := EvalLoss(m, seqs, 0)
	if err != nil {
		t.Fatal(err)
	}
	micro, err := EvalLoss(m, seqs, 2)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(whole-micro) > 1e-5 {
		t.Errorf("loss %g in one pass, %g in length-sorted micro-batches", whole, micro)
	}
}
