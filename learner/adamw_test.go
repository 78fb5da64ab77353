package learner

import (
	"math"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/model"
)

// A one-parameter-vector problem: loss = Σ_i (w·x_i − y_i)², gradient 2 Σ_i (w·x_i − y_i) x_i.
var (
	xs = [][]float64{{1, 2, 0}, {0, 1, -1}, {2, 0, 1}}
	ys = []float64{1, -1, 3}
)

func lossAndGrad(w []float64) (float64, []float64) {
	g := make([]float64, len(w))
	l := 0.0
	for i, x := range xs {
		r := -ys[i]
		for j := range w {
			r += w[j] * x[j]
		}
		l += r * r
		for j := range w {
			g[j] += 2 * r * x[j]
		}
	}
	return l, g
}

// refAdamW is the update rule in float64, from the paper.
func refAdamW(w, m, v []float64, g []float64, t int, lr, b1, b2, eps, wd float64) {
	for j := range w {
		w[j] -= lr * wd * w[j]
		m[j] = b1*m[j] + (1-b1)*g[j]
		v[j] = b2*v[j] + (1-b2)*g[j]*g[j]
		mh := m[j] / (1 - math.Pow(b1, float64(t)))
		vh := v[j] / (1 - math.Pow(b2, float64(t)))
		w[j] -= lr * mh / (math.Sqrt(vh) + eps)
	}
}

func newProblem(t *testing.T) (*nn.VarStore, *ts.Tensor, func() *ts.Tensor) {
	vs := nn.NewVarStore(gotch.CPU)
	w, err := vs.Root().Add("w", model.Float32Tensor([]float32{0.5, -0.5, 0.1}, 3), true)
	if err != nil {
		t.Fatal(err)
	}
	var xf []float32
	for _, x := range xs {
		for _, v := range x {
			xf = append(xf, float32(v))
		}
	}
	X := model.Float32Tensor(xf, 3, 3)
	Y := model.Float32Tensor([]float32{1, -1, 3}, 3)
	loss := func() *ts.Tensor {
		pred := X.MustMatmul(w.MustUnsqueeze(-1, false), false).MustSqueezeDim(-1, true)
		r := pred.MustSub(Y, true)
		return r.MustMul(r, true).MustSum(gotch.Float, true)
	}
	return vs, w, loss
}

func TestAdamWMatchesTheUpdateRule(t *testing.T) {
	lock(t)
	vs, w, loss := newProblem(t)
	o := NewAdamW(vs, 0.9, 0.95, 1e-8, 0.01)
	defer o.Close()
	ref := []float64{0.5, -0.5, 0.1}
	m, v := make([]float64, 3), make([]float64, 3)
	for step := 1; step <= 4; step++ {
		o.ZeroGrad()
		l := loss()
		l.MustBackward()
		l.MustDrop()
		if _, ok := o.Update(0.05, 0); !ok {
			t.Fatal("step skipped")
		}
		_, g := lossAndGrad(ref)
		refAdamW(ref, m, v, g, step, 0.05, 0.9, 0.95, 1e-8, 0.01)
		got := model.Float32s(w)
		for j := range ref {
			if math.Abs(float64(got[j])-ref[j]) > 1e-5 {
				t.Fatalf("step %d: w = %v, reference %v", step, got, ref)
			}
		}
	}
}

func TestAdamWClipsSkipsAndResumes(t *testing.T) {
	lock(t)
	vs, w, loss := newProblem(t)
	o := NewAdamW(vs, 0.9, 0.95, 1e-8, 0)
	defer o.Close()
	o.ZeroGrad()
	l := loss()
	l.MustBackward()
	l.MustDrop()
	_, g := lossAndGrad([]float64{0.5, -0.5, 0.1})
	want := math.Sqrt(g[0]*g[0] + g[1]*g[1] + g[2]*g[2])
	if norm := o.GradNorm(); math.Abs(norm-want) > 1e-4 {
		t.Errorf("grad norm %v, want %v", norm, want)
	}
	o.Update(0.01, 1)
	state, step := o.State(), o.Step
	before := model.Float32s(w)

	// Continue one step, then restore and take the same step again: identical parameters.
	next := func() []float32 {
		o.ZeroGrad()
		l := loss()
		l.MustBackward()
		l.MustDrop()
		o.Update(0.01, 1)
		return model.Float32s(w)
	}
	a := next()
	ts.NoGrad(func() { w.Copy_(model.Float32Tensor(before, 3)) })
	if err := o.LoadState(state, step); err != nil {
		t.Fatal(err)
	}
	b := next()
	for j := range a {
		if a[j] != b[j] {
			t.Fatalf("resumed step differs: %v vs %v", a, b)
		}
	}
	// A non-finite gradient skips the update.
	o.ZeroGrad()
	l = loss().MustMulScalar(ts.FloatScalar(math.Inf(1)), true)
	l.MustBackward()
	l.MustDrop()
	stepBefore, wBefore := o.Step, model.Float32s(w)
	if _, ok := o.Update(0.01, 1); ok || o.Step != stepBefore || model.Float32s(w)[0] != wBefore[0] {
		t.Error("a non-finite gradient was applied")
	}
	if err := o.LoadState(map[string]model.Param{}, 0); err == nil {
		t.Error("empty optimizer state accepted")
	}
}

func TestWarmupCosine(t *testing.T) {
	// 10 steps, 20% warmup: steps 0,1 ramp to base; then cosine from base at step 2 to 0.1·base.
	for _, c := range []struct {
		step int
		want float64
	}{{0, 0.5}, {1, 1}, {2, 1}, {6, 0.1 + 0.9*0.5*(1+math.Cos(math.Pi*0.5))}, {10, 0.1}} {
		if got := WarmupCosine(c.step, 10, 0.2, 1, 0.1); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("step %d: %v, want %v", c.step, got, c.want)
		}
	}
}
