package harness

import (
	"math/rand/v2"
	"slices"
)

// Confidence intervals over validation puzzles. The samples of one puzzle are not independent
// (an easy level is solved by every sample), so the unit of resampling is the puzzle: a
// percentile bootstrap of the mean over puzzles, with a fixed seed so a report is reproducible.

// bootstrapResamples is enough for stable 2.5% and 97.5% percentiles.
const bootstrapResamples = 2000

// Interval is a 95% confidence interval.
type Interval struct {
	Low  float64 `json:"low"`
	High float64 `json:"high"`
}

// bootstrapMean is the 95% percentile-bootstrap interval of the mean of x.
func bootstrapMean(x []float64, seed uint64) Interval {
	if len(x) == 0 {
		return Interval{}
	}
	rng := rand.New(rand.NewPCG(seed, 0x626f6f74))
	means := make([]float64, bootstrapResamples)
	for r := range means {
		sum := 0.0
		for range x {
			sum += x[rng.IntN(len(x))]
		}
		means[r] = sum / float64(len(x))
	}
	slices.Sort(means)
	return Interval{Low: means[bootstrapResamples*25/1000], High: means[bootstrapResamples*975/1000-1]}
}

// perPuzzle turns success counts of k samples per puzzle into each puzzle's Pass@1 (the share
// of its samples solved) and Pass@k (whether any was).
func perPuzzle(successes []int, k int) (pass1, passK []float64) {
	pass1, passK = make([]float64, len(successes)), make([]float64, len(successes))
	for i, c := range successes {
		pass1[i] = float64(c) / float64(k)
		if c > 0 {
			passK[i] = 1
		}
	}
	return pass1, passK
}

// Paired is the difference a − b of two policies evaluated on the same puzzles: the mean of the
// per-puzzle differences and its interval. Pairing removes the puzzles' own difficulty from the
// comparison, so it is tighter than comparing two separate intervals.
type Paired struct {
	Diff float64  `json:"diff"`
	CI   Interval `json:"ci95"`
}

// pairedDiff compares per-puzzle values of two evaluations of the same puzzles.
func pairedDiff(a, b []float64, seed uint64) (Paired, bool) {
	if len(a) != len(b) || len(a) == 0 {
		return Paired{}, false
	}
	d := make([]float64, len(a))
	sum := 0.0
	for i := range a {
		d[i] = a[i] - b[i]
		sum += d[i]
	}
	return Paired{Diff: sum / float64(len(d)), CI: bootstrapMean(d, seed)}, true
}
