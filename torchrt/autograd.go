package torchrt

import (
	"context"
	"fmt"
	"math"

	"github.com/sugarme/gotch/ts"
)

// CheckAutograd runs one tiny backward pass on ex and verifies the gradient against the analytic
// one: for y = sum(x²), dy/dx = 2x. It proves that libtorch loads, computes, and keeps grad mode
// on the executor's thread.
func CheckAutograd(ctx context.Context, ex *Executor) error {
	return ex.Do(ctx, func() error {
		input := []float64{1, -2, 3.5}
		x := ts.MustOfSlice(input).MustSetRequiresGrad(true, true)
		defer x.MustDrop()
		sq := x.MustMul(x, false)
		defer sq.MustDrop()
		y := sq.MustSum(sq.DType(), false)
		defer y.MustDrop()
		if err := y.Backward(); err != nil {
			return fmt.Errorf("backward: %w", err)
		}
		grad := x.MustGrad(false)
		defer grad.MustDrop()
		got := grad.Float64Values()
		if len(got) != len(input) {
			return fmt.Errorf("gradient has %d values, want %d", len(got), len(input))
		}
		for i, v := range input {
			if math.Abs(got[i]-2*v) > 1e-12 {
				return fmt.Errorf("gradient[%d] = %g, want %g", i, got[i], 2*v)
			}
		}
		return nil
	})
}
