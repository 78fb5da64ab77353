package busenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
)

// LatencyResult is the distribution of step round trips through the bus.
type LatencyResult struct {
	Steps int     `json:"steps"`
	P50us float64 `json:"p50_us"`
	P90us float64 `json:"p90_us"`
	P99us float64 `json:"p99_us"`
}

// MeasureStepLatency plays env through a Remote on nc for about d (after a warm-up) and times
// every Step round trip; resets are not timed. A host must already serve env.
func MeasureStepLatency(ctx context.Context, nc *nats.Conn, env, variant string, d time.Duration) (LatencyResult, error) {
	r, err := Dial(ctx, nc, env, RemoteOptions{Variant: variant})
	if err != nil {
		return LatencyResult{}, err
	}
	defer r.Close()
	// Draw from the action names: an explore request per step would double the traffic timed.
	actions := r.Spec().Actions
	if len(actions) == 0 {
		return LatencyResult{}, fmt.Errorf("%s lists no actions to step with", env)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var samples []time.Duration
	warm := 2000
	start := time.Now()
	for seed := int64(0); time.Since(start) < d || len(samples) < 1000; seed++ {
		if err := r.ResetContext(ctx, seed); err != nil {
			return LatencyResult{}, err
		}
		for {
			a := actions[rng.IntN(len(actions))]
			t0 := time.Now()
			st, err := r.StepContext(ctx, a)
			el := time.Since(t0)
			if err != nil {
				return LatencyResult{}, fmt.Errorf("step %s: %w", env, err)
			}
			if warm > 0 {
				warm--
				start = time.Now()
			} else {
				samples = append(samples, el)
			}
			if st.Done {
				break
			}
		}
	}
	slices.Sort(samples)
	q := func(p float64) float64 {
		return float64(samples[int(p*float64(len(samples)-1))].Nanoseconds()) / 1e3
	}
	return LatencyResult{Steps: len(samples), P50us: q(0.5), P90us: q(0.9), P99us: q(0.99)}, nil
}
