package harness

import (
	"math"
	"testing"
)

func TestBootstrapIntervals(t *testing.T) {
	if iv := bootstrapMean([]float64{0.25, 0.25, 0.25}, 1); iv.Low != 0.25 || iv.High != 0.25 {
		t.Errorf("constant data: %+v", iv)
	}
	// 64 puzzles, half solved: the mean is 0.5 with standard error sqrt(0.25/64) = 0.0625, so the
	// 95% interval is about ±0.12.
	x := make([]float64, 64)
	for i := range 32 {
		x[i] = 1
	}
	iv := bootstrapMean(x, 1)
	if math.Abs(iv.Low-0.38) > 0.04 || math.Abs(iv.High-0.62) > 0.04 {
		t.Errorf("half of 64 solved: %+v, want about [0.38, 0.62]", iv)
	}
	if again := bootstrapMean(x, 1); again != iv {
		t.Errorf("the same seed gave %+v then %+v", iv, again)
	}
	// Pairing removes the puzzles' difficulty: b solves exactly what a solves plus one more, so
	// the difference is −1/64 with a narrow interval, although each alone is uncertain.
	y := append([]float64(nil), x...)
	y[40] = 1
	d, ok := pairedDiff(x, y, 1)
	if !ok || math.Abs(d.Diff+1.0/64) > 1e-12 || d.CI.Low < -3.0/64 || d.CI.High > 0 {
		t.Errorf("paired difference %+v", d)
	}
	if _, ok := pairedDiff(x, y[:10], 1); ok {
		t.Error("evaluations of different puzzle sets were paired")
	}
	p1, pk := perPuzzle([]int{0, 2, 8}, 8)
	if p1[1] != 0.25 || pk[0] != 0 || pk[1] != 1 || pk[2] != 1 {
		t.Errorf("per puzzle: %v %v", p1, pk)
	}
}
