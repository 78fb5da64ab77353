package learner

import (
	"fmt"
	"math"
	"sort"

	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/model"
)

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter 2019), written over the model's
// parameters with moment tensors spa owns. gotch's optimizer keeps its moments inside libtorch
// where they cannot be saved, and exact resume needs them in the checkpoint.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	// Step counts completed updates (the bias correction's t).
	Step int64

	names  []string
	params []*ts.Tensor
	m, v   []*ts.Tensor
}

// NewAdamW optimises every trainable parameter of vs (in name order, so state maps are stable).
func NewAdamW(vs *nn.VarStore, beta1, beta2, eps, weightDecay float64) *AdamW {
	vars := vs.Variables()
	names := make([]string, 0, len(vars))
	for name := range vars {
		names = append(names, name)
	}
	sort.Strings(names)
	o := &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay}
	for _, name := range names {
		// Variables returns copies of the handles; a copy names the same libtorch tensor, so
		// gradients and in-place updates through it reach the parameter.
		v := vars[name]
		o.names = append(o.names, name)
		o.params = append(o.params, &v)
		o.m = append(o.m, v.MustZerosLike(false))
		o.v = append(o.v, v.MustZerosLike(false))
	}
	return o
}

// Close frees the moment tensors.
func (o *AdamW) Close() {
	for i := range o.m {
		o.m[i].MustDrop()
		o.v[i].MustDrop()
	}
	o.m, o.v = nil, nil
}

// ZeroGrad clears the parameters' gradients.
func (o *AdamW) ZeroGrad() {
	for _, p := range o.params {
		p.ZeroGrad()
	}
}

// GradNorm is the global L2 norm of the gradients.
func (o *AdamW) GradNorm() float64 {
	sum := 0.0
	ts.NoGrad(func() {
		for _, p := range o.params {
			g := p.MustGrad(false)
			if g.MustDefined() {
				n := g.MustNorm(false)
				x := n.Float64Values()[0]
				n.MustDrop()
				sum += x * x
			}
			g.MustDrop()
		}
	})
	return math.Sqrt(sum)
}

// Update applies one step with learning rate lr, first scaling gradients so their global norm is
// at most clip (clip ≤ 0 disables it). A non-finite gradient norm skips the step and returns
// false, so one bad batch cannot poison the weights.
func (o *AdamW) Update(lr, clip float64) (norm float64, applied bool) {
	norm = o.GradNorm()
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, false
	}
	scale := 1.0
	if clip > 0 && norm > clip {
		scale = clip / (norm + 1e-6)
	}
	o.Step++
	bc1 := 1 - math.Pow(o.Beta1, float64(o.Step))
	bc2 := 1 - math.Pow(o.Beta2, float64(o.Step))
	ts.NoGrad(func() {
		for i, p := range o.params {
			g0 := p.MustGrad(false)
			if !g0.MustDefined() {
				g0.MustDrop()
				continue
			}
			g := g0.MustMulScalar(ts.FloatScalar(scale), true)
			// Decoupled weight decay: p ← p − lr·wd·p.
			if o.WeightDecay > 0 {
				p.MustMulScalar_(ts.FloatScalar(1 - lr*o.WeightDecay))
			}
			// m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g².
			o.m[i].MustMulScalar_(ts.FloatScalar(o.Beta1))
			gs := g.MustMulScalar(ts.FloatScalar(1-o.Beta1), false)
			o.m[i].MustAdd_(gs)
			gs.MustDrop()
			o.v[i].MustMulScalar_(ts.FloatScalar(o.Beta2))
			g2 := g.MustMul(g, false).MustMulScalar(ts.FloatScalar(1-o.Beta2), true)
			o.v[i].MustAdd_(g2)
			g2.MustDrop()
			g.MustDrop()
			// p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps)
			denom := o.v[i].MustDivScalar(ts.FloatScalar(bc2), false).MustSqrt(true).MustAddScalar(ts.FloatScalar(o.Eps), true)
			step := o.m[i].MustDivScalar(ts.FloatScalar(bc1), false).MustDiv(denom, true).MustMulScalar(ts.FloatScalar(-lr), true)
			denom.MustDrop()
			p.MustAdd_(step)
			step.MustDrop()
		}
	})
	return norm, true
}

// State returns the moments by parameter name ("exp_avg/<name>", "exp_avg_sq/<name>"), for the
// trainer checkpoint.
func (o *AdamW) State() map[string]model.Param {
	out := map[string]model.Param{}
	for i, name := range o.names {
		out["exp_avg/"+name] = model.ParamOf(o.m[i])
		out["exp_avg_sq/"+name] = model.ParamOf(o.v[i])
	}
	return out
}

// LoadState restores moments saved by State; every parameter must be present with its shape.
func (o *AdamW) LoadState(state map[string]model.Param, step int64) error {
	for i, name := range o.names {
		for k, dst := range map[string]*ts.Tensor{"exp_avg/" + name: o.m[i], "exp_avg_sq/" + name: o.v[i]} {
			p, ok := state[k]
			if !ok {
				return fmt.Errorf("optimizer state lacks %s", k)
			}
			if fmt.Sprint(p.Shape) != fmt.Sprint(dst.MustSize()) {
				return fmt.Errorf("optimizer state %s has shape %v, want %v", k, p.Shape, dst.MustSize())
			}
			src := p.Tensor()
			ts.NoGrad(func() { dst.Copy_(src) })
			src.MustDrop()
		}
	}
	o.Step = step
	return nil
}

// WarmupCosine is the learning rate at step (0-based) of total: a linear warmup over the first
// warmup share of steps to base, then a cosine decay to minRatio·base (docs/method.md's SFT: 10% warmup,
// then cosine).
func WarmupCosine(step, total int, warmup, base, minRatio float64) float64 {
	if total <= 0 {
		return base
	}
	w := int(math.Round(warmup * float64(total)))
	if step < w {
		return base * float64(step+1) / float64(w)
	}
	progress := float64(step-w) / float64(max(1, total-w))
	progress = min(progress, 1)
	return base * (minRatio + (1-minRatio)*0.5*(1+math.Cos(math.Pi*progress)))
}
