package envs

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// BenchResult is the measured speed of one environment variant.
type BenchResult struct {
	Env          string  `json:"env"`
	Variant      string  `json:"variant"`
	ResetsPerSec float64 `json:"resets_per_sec"`
	StepsPerSec  float64 `json:"steps_per_sec"`
	Resets       int     `json:"resets"`
	Steps        int     `json:"steps"`
}

// Measure times Reset (a new seed each time, so generation is included) for about d, and Step
// (random actions from RandomAction, chosen before the clock runs) for about d of stepping or 3d of
// wall time, whichever ends first.
func Measure(name, variant string, d time.Duration) (BenchResult, error) {
	env, err := New(name, variant)
	if err != nil {
		return BenchResult{}, err
	}
	res := BenchResult{Env: name, Variant: env.Spec().Variant}

	start := time.Now()
	for time.Since(start) < d {
		if err := env.Reset(int64(res.Resets)); err != nil {
			return res, fmt.Errorf("reset %s seed %d: %w", name, res.Resets, err)
		}
		res.Resets++
	}
	res.ResetsPerSec = float64(res.Resets) / time.Since(start).Seconds()

	// Steps are timed per episode, so the resets between episodes do not count against them. Where
	// resets cost far more than steps, the wall-clock bound ends the measurement.
	rng := rand.New(rand.NewPCG(1, 2))
	var stepping time.Duration
	actions := make([]string, 0, 64)
	wall := time.Now()
	for seed := int64(0); stepping < d && (time.Since(wall) < 3*d || res.Steps < 1000); seed++ {
		if err := env.Reset(seed); err != nil {
			return res, fmt.Errorf("reset %s seed %d: %w", name, seed, err)
		}
		actions = actions[:0]
		for i := 0; i < cap(actions); i++ {
			actions = append(actions, RandomAction(env, rng))
		}
		t0 := time.Now()
		for _, a := range actions {
			st, err := env.Step(a)
			if err != nil {
				return res, fmt.Errorf("step %s %q: %w", name, a, err)
			}
			res.Steps++
			if st.Done {
				break
			}
		}
		stepping += time.Since(t0)
	}
	res.StepsPerSec = float64(res.Steps) / stepping.Seconds()
	return res, nil
}
