package learner

import (
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// The objectives of docs/method.md's PPO and SFT, over flat tensors of the trained tokens. Every loss is a
// token mean: the sum over positions whose mask is 1 divided by their count, so long and short
// responses weigh by their tokens (verl's "token-mean"). Masks are float tensors of 0 and 1.

// maskedMean is sum(x·mask) / max(sum(mask), 1).
func maskedMean(x, mask *ts.Tensor) *ts.Tensor {
	num := x.MustMul(mask, false).MustSum(gotch.Float, true)
	den := mask.MustSum(gotch.Float, false).MustClamp(ts.FloatScalar(1), ts.FloatScalar(1e30), true)
	out := num.MustDiv(den, true)
	den.MustDrop()
	return out
}

// PolicyLossOptions are PPO's clipping settings (docs/method.md: 0.2 low, 0.28 high, dual clip 3).
type PolicyLossOptions struct {
	ClipLow, ClipHigh float64
	// DualClip bounds the loss of negative-advantage tokens at −A·DualClip (Ye et al. 2020); 0
	// disables it.
	DualClip float64
}

// PolicyLoss is the clipped surrogate:
//
//	r = exp(logp − oldLogp)
//	L = max(−A·r, −A·clip(r, 1−low, 1+high))
//	L = min(L, −A·c) where A < 0 (dual clip)
//
// token-averaged over mask. negAdv is 1 where A < 0 (built by the caller from the advantages it
// already has). It also returns the share of tokens whose ratio was clipped and the approximate
// KL mean(oldLogp − logp), both as plain numbers.
func PolicyLoss(logp, oldLogp, adv, negAdv, mask *ts.Tensor, o PolicyLossOptions) (*ts.Tensor, float64, float64) {
	diff := logp.MustSub(oldLogp, false)
	ratio := diff.MustExp(false)
	negA := adv.MustNeg(false)
	s1 := negA.MustMul(ratio, false)
	clipped := ratio.MustClamp(ts.FloatScalar(1-o.ClipLow), ts.FloatScalar(1+o.ClipHigh), false)
	s2 := negA.MustMul(clipped, false)
	loss := s1.MustMaximum(s2, false)
	if o.DualClip > 0 {
		bound := negA.MustMulScalar(ts.FloatScalar(o.DualClip), false)
		dual := loss.MustMinimum(bound, false)
		bound.MustDrop()
		// loss·(1−neg) + dual·neg
		keep := negAdv.MustNeg(false).MustAddScalar(ts.FloatScalar(1), true)
		a := loss.MustMul(keep, true)
		b := dual.MustMul(negAdv, true)
		keep.MustDrop()
		loss = a.MustAdd(b, true)
		b.MustDrop()
	}
	out := maskedMean(loss, mask)
	var clipFrac, kl float64
	ts.NoGrad(func() {
		changed := s2.MustSub(s1, false).MustAbs(true).MustGt(ts.FloatScalar(1e-12), true).MustTotype(gotch.Float, true)
		cf := maskedMean(changed, mask)
		clipFrac = cf.Float64Values()[0]
		cf.MustDrop()
		changed.MustDrop()
		nd := diff.MustNeg(false)
		k := maskedMean(nd, mask)
		kl = k.Float64Values()[0]
		k.MustDrop()
		nd.MustDrop()
	})
	for _, t := range []*ts.Tensor{diff, ratio, negA, s1, clipped, s2, loss} {
		t.MustDrop()
	}
	return out, clipFrac, kl
}

// ValueLoss is the clipped value loss 0.5·max((V − R)², (V_clip − R)²) with
// V_clip = V_old + clip(V − V_old, −c, c), token-averaged over mask (docs/method.md: c = 0.5).
func ValueLoss(values, oldValues, returns, mask *ts.Tensor, clip float64) *ts.Tensor {
	delta := values.MustSub(oldValues, false).MustClamp(ts.FloatScalar(-clip), ts.FloatScalar(clip), true)
	vclip := oldValues.MustAdd(delta, false)
	delta.MustDrop()
	e1 := values.MustSub(returns, false)
	e1 = e1.MustMul(e1, true)
	e2 := vclip.MustSub(returns, true)
	e2 = e2.MustMul(e2, true)
	m := e1.MustMaximum(e2, true).MustMulScalar(ts.FloatScalar(0.5), true)
	e2.MustDrop()
	out := maskedMean(m, mask)
	m.MustDrop()
	return out
}

// TokenLogProbs gathers log softmax(logits)[target] for each position: logits [N, V], targets [N]
// (int64) give [N].
func TokenLogProbs(logits, targets *ts.Tensor) *ts.Tensor {
	lsm := logits.MustLogSoftmax(-1, gotch.Float, false)
	idx := targets.MustUnsqueeze(-1, false)
	out := lsm.MustGather(-1, idx, false, true).MustSqueezeDim(-1, true)
	idx.MustDrop()
	return out
}

// Entropy is the token-averaged entropy −Σ p log p of logits [N, V] over mask [N].
func Entropy(logits, mask *ts.Tensor) *ts.Tensor {
	lsm := logits.MustLogSoftmax(-1, gotch.Float, false)
	p := lsm.MustExp(false)
	h := p.MustMul(lsm, true).MustSumDimIntlist([]int64{-1}, false, gotch.Float, true).MustNeg(true)
	lsm.MustDrop()
	out := maskedMean(h, mask)
	h.MustDrop()
	return out
}

// SFTLoss is the token-averaged cross-entropy of targets under logits [N, V] over mask [N]: the
// world-model SFT loss, with mask 1 on the assistant's tokens.
func SFTLoss(logits, targets, mask *ts.Tensor) *ts.Tensor {
	lp := TokenLogProbs(logits, targets)
	nll := lp.MustNeg(true)
	out := maskedMean(nll, mask)
	nll.MustDrop()
	return out
}
