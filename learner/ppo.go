package learner

import (
	"errors"
	"fmt"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/rollout"
)

// PPOOptions are docs/method.md's PPO settings (clip 0.2/0.28, dual clip 3, entropy 0.001, γ = λ = 1,
// actor lr 1e-6, critic lr 1e-5, value clip 0.5, keep 25% of groups, one mini-batch).
type PPOOptions struct {
	ActorLR, CriticLR                   float64
	ClipLow, ClipHigh, DualClip         float64
	EntropyCoef, KLCoef                 float64
	Gamma, Lambda, ValueClip            float64
	KeepGroupRatio                      float64
	MiniBatches, Epochs                 int
	Beta1, Beta2, WeightDecay, GradClip float64
	// Advantage is the advantage estimator; empty means AdvantageGAE.
	Advantage Advantage
	// LossAgg is how the policy loss averages tokens; empty means LossTokenMean.
	LossAgg LossAgg
	// GroupNorm scales GRPO's group advantages: NormStd (verl's) by default, NormNone for Dr.GRPO.
	GroupNorm GroupNorm
	// GroupFilter picks the groups a step trains on (FilterStd by default, keeping
	// KeepGroupRatio of them).
	GroupFilter GroupFilter
	// RewardScale multiplies every reward before advantages and returns; zero means 1. Scaling
	// returns to about ±1 puts them where ValueClip and a fresh critic's outputs are.
	RewardScale float64
	// CriticWarmup is how many steps train the critic alone, before the actor starts (verl's
	// trainer.critic_warmup): advantages from an untrained critic are noise.
	CriticWarmup int
	// CriticEpochs is how many passes the critic makes over each step's batch; zero means Epochs
	// (verl's critic.ppo_epochs). The critic is a whole second model, so its passes cost as much
	// as the actor's.
	CriticEpochs int
	// GroupSize, when positive, trains complete groups only: a group with fewer episodes in the
	// batch (free-running workers can split one across batches) is dropped and counted.
	GroupSize int
	// ShuffleRewards permutes rewards (and success) among the episodes of each group before
	// training: the negative control. A policy that still improves learns from something other
	// than its rewards, which is a bug.
	ShuffleRewards bool
	// Temperature the trajectories were sampled at; logprobs are recomputed under it.
	Temperature float64
	// MicroBatch is how many sequences one forward pass holds; zero means a whole mini-batch.
	MicroBatch int
	// Seed orders mini-batches: step s shuffles with (Seed, s).
	Seed uint64
}

// PPO holds the models and optimisers of the PPO stage. Its methods must run on one locked OS
// thread.
type PPO struct {
	// Actor is the policy; Critic a separate model with a value head (nil for GRPO); Ref the
	// frozen reference for the KL penalty (nil when KLCoef is 0).
	Actor, Critic, Ref  *model.Model
	ActorOpt, CriticOpt *AdamW
	o                   PPOOptions
}

// NewPPO checks the options against the models and makes the optimisers.
func NewPPO(actor, critic, ref *model.Model, o PPOOptions) (*PPO, error) {
	var err error
	if o.Advantage, err = ParseAdvantage(string(o.Advantage)); err != nil {
		return nil, fmt.Errorf("ppo: %w", err)
	}
	if o.LossAgg, err = ParseLossAgg(string(o.LossAgg)); err != nil {
		return nil, fmt.Errorf("ppo: %w", err)
	}
	switch {
	case o.Advantage.UsesCritic() && (critic == nil || !critic.HasValueHead()):
		return nil, fmt.Errorf("ppo: advantage %q needs a critic with a value head", o.Advantage)
	case !o.Advantage.UsesCritic() && critic != nil:
		return nil, fmt.Errorf("ppo: %s uses no critic", o.Advantage)
	}
	if o.KLCoef > 0 && ref == nil {
		return nil, errors.New("ppo: kl_coef > 0 needs a reference model")
	}
	if o.MiniBatches <= 0 {
		o.MiniBatches = 1
	}
	if o.Epochs <= 0 {
		o.Epochs = 1
	}
	if o.CriticEpochs <= 0 {
		o.CriticEpochs = o.Epochs
	}
	if o.Temperature <= 0 {
		o.Temperature = 1
	}
	if o.RewardScale == 0 {
		o.RewardScale = 1
	}
	if o.GroupNorm, err = ParseGroupNorm(string(o.GroupNorm)); err != nil {
		return nil, fmt.Errorf("ppo: %w", err)
	}
	if o.GroupFilter, err = ParseGroupFilter(string(o.GroupFilter)); err != nil {
		return nil, fmt.Errorf("ppo: %w", err)
	}
	if o.CriticWarmup > 0 && critic == nil {
		return nil, errors.New("ppo: critic warm-up needs a critic (gae or turn-gae)")
	}
	p := &PPO{Actor: actor, Critic: critic, Ref: ref, o: o}
	p.ActorOpt = NewAdamW(actor.TrainableVarStore(), o.Beta1, o.Beta2, 1e-8, o.WeightDecay)
	if critic != nil {
		p.CriticOpt = NewAdamW(critic.TrainableVarStore(), o.Beta1, o.Beta2, 1e-8, o.WeightDecay)
	}
	return p, nil
}

// Close frees the optimisers (the models belong to the caller).
func (p *PPO) Close() {
	p.ActorOpt.Close()
	if p.CriticOpt != nil {
		p.CriticOpt.Close()
	}
}

// PPOMetrics are one step's numbers, named as verl logs them where it has a name. The first
// group describes what the policy did (over every trajectory of the batch, before filtering);
// the rest what the update did.
type PPOMetrics struct {
	Trajectories int     `json:"trajectories"`
	Kept         int     `json:"kept"`
	Filtered     int     `json:"filtered"`
	Incomplete   int     `json:"incomplete_groups_dropped,omitempty"`
	Reward       float64 `json:"reward"`
	Success      float64 `json:"success"`
	// EnvReward and FormatPenalty split Reward: what the environment paid (moves, boxes, the
	// solve) and the format penalties the rollout added, per episode.
	EnvReward     float64 `json:"reward_env"`
	FormatPenalty float64 `json:"reward_format_penalty"`
	// Moves counts the actions the environment accepted, Turns the turns played, per episode;
	// FormatErrors is the share of turns whose answer broke the format.
	Moves        float64 `json:"moves_per_episode"`
	Turns        float64 `json:"turns_per_episode"`
	FormatErrors float64 `json:"format_error_rate"`
	ResponseLen  float64 `json:"response_length"`
	Tokens       int     `json:"tokens"`
	PolicyLoss   float64 `json:"pg_loss"`
	ValueLoss    float64 `json:"vf_loss"`
	Entropy      float64 `json:"entropy"`
	ApproxKL     float64 `json:"ppo_kl"`
	RefKL        float64 `json:"ref_kl,omitempty"`
	ClipFrac     float64 `json:"pg_clipfrac"`
	GradNorm     float64 `json:"grad_norm"`
	CriticNorm   float64 `json:"critic_grad_norm,omitempty"`
	ExplainedVar float64 `json:"vf_explained_var"`
	// ActorFrozen is true in a critic warm-up step; NoSignal when the filter kept no group.
	ActorFrozen bool    `json:"actor_frozen,omitempty"`
	NoSignal    bool    `json:"no_signal,omitempty"`
	Skipped     int     `json:"skipped_updates"`
	ScoreTime   float64 `json:"score_s"`
	UpdateTime  float64 `json:"update_s"`
}

// describe fills the metrics of what the policy did in trajs.
func (met *PPOMetrics) describe(trajs []*bus.Trajectory) {
	n := float64(len(trajs))
	turns := 0
	for _, t := range trajs {
		met.Reward += t.Reward / n
		if t.Success {
			met.Success += 1 / n
		}
		for _, turn := range t.Turns {
			turns++
			penalised := !turn.FormatOK
			for _, ok := range turn.Valid {
				if ok {
					met.Moves += 1 / n
				} else {
					penalised = true
				}
			}
			if !turn.FormatOK {
				met.FormatErrors++
			}
			if penalised {
				met.FormatPenalty += rollout.FormatPenalty / n
			}
		}
	}
	met.Turns = float64(turns) / n
	if turns > 0 {
		met.FormatErrors /= float64(turns)
	}
	met.EnvReward = met.Reward - met.FormatPenalty
}

// Update runs one PPO step on trajs: filter groups, score (critic values, reference logprobs),
// compute advantages, then Epochs passes of MiniBatches actor updates and CriticEpochs passes of
// critic updates over the same mini-batches. step (the
// number of steps before this one) seeds the mini-batch order and ends the critic warm-up.
func (p *PPO) Update(trajs []*bus.Trajectory, step int) (PPOMetrics, error) {
	var met PPOMetrics
	met.Trajectories = len(trajs)
	if len(trajs) == 0 {
		return met, errors.New("ppo: no trajectories")
	}
	met.describe(trajs)
	all := make([]Sequence, len(trajs))
	for i, t := range trajs {
		s, err := FromTrajectory(t)
		if err != nil {
			return met, err
		}
		all[i] = s
	}
	if p.o.ShuffleRewards {
		shuffleRewards(all, p.o.Seed, uint64(step))
	}
	if p.o.RewardScale != 1 {
		for i := range all {
			all[i].Reward *= p.o.RewardScale
			for k := range all[i].TurnRewards {
				all[i].TurnRewards[k] *= p.o.RewardScale
			}
		}
	}
	if p.o.GroupSize > 0 {
		all, met.Incomplete = completeGroups(all, p.o.GroupSize)
	}
	seqs := filterSequences(all, p.o.GroupFilter, p.o.KeepGroupRatio)
	met.Kept, met.Filtered = len(seqs), len(trajs)-len(seqs)
	if len(seqs) == 0 {
		met.NoSignal = true
		return met, nil
	}

	t0 := time.Now()
	adv, ret, oldV, refLogp, err := p.score(seqs)
	if err != nil {
		return met, err
	}
	met.ScoreTime = time.Since(t0).Seconds()
	for _, s := range seqs {
		met.Tokens += len(s.OldLogp)
	}
	met.ResponseLen = float64(met.Tokens) / float64(len(seqs))
	if oldV != nil {
		met.ExplainedVar = explainedVariance(flatten(ret), flatten(oldV))
	}
	met.ActorFrozen = step < p.o.CriticWarmup

	t0 = time.Now()
	var sums stepSums
	for epoch := range max(p.o.Epochs, p.o.CriticEpochs) {
		order := permutation(len(seqs), p.o.Seed, uint64(step)<<8|uint64(epoch))
		for _, mb := range chunks(len(order), (len(order)+p.o.MiniBatches-1)/p.o.MiniBatches) {
			idx := order[mb[0]:mb[1]]
			if !met.ActorFrozen && epoch < p.o.Epochs {
				if err := p.updateActor(seqs, idx, adv, refLogp, &sums); err != nil {
					return met, err
				}
			}
			if p.Critic != nil && epoch < p.o.CriticEpochs {
				if err := p.updateCritic(seqs, idx, ret, oldV, &sums); err != nil {
					return met, err
				}
			}
		}
	}
	met.UpdateTime = time.Since(t0).Seconds()
	n := float64(max(sums.updates, 1))
	met.PolicyLoss, met.Entropy, met.ApproxKL, met.ClipFrac, met.RefKL = sums.pg/n, sums.ent/n, sums.kl/n, sums.clip/n, sums.refKL/n
	met.GradNorm, met.Skipped = sums.norm/n, sums.skipped
	if sums.criticUpdates > 0 {
		met.ValueLoss, met.CriticNorm = sums.vf/float64(sums.criticUpdates), sums.criticNorm/float64(sums.criticUpdates)
	}
	return met, nil
}

// shuffleRewards permutes the outcomes (reward, turn rewards, success) among the members of each
// group, the same way for the same (seed, step).
func shuffleRewards(seqs []Sequence, seed, step uint64) {
	type outcome struct {
		reward  float64
		turns   []float64
		success bool
	}
	for gi, members := range groupMembers(seqs) {
		outs := make([]outcome, len(members))
		for j, i := range members {
			outs[j] = outcome{seqs[i].Reward, seqs[i].TurnRewards, seqs[i].Success}
		}
		perm := permutation(len(members), seed, 0x5348<<32|step<<12|uint64(gi))
		for j, i := range members {
			o := outs[perm[j]]
			// Turn rewards follow the episode's own turns; another episode's may have fewer.
			turns := make([]float64, len(seqs[i].TurnRewards))
			copy(turns, o.turns)
			if len(o.turns) > len(turns) && len(turns) > 0 {
				for _, r := range o.turns[len(turns):] {
					turns[len(turns)-1] += r
				}
			}
			seqs[i].Reward, seqs[i].TurnRewards, seqs[i].Success = o.reward, turns, o.success
		}
	}
}

// groupMembers lists the indices of each group's sequences, groups in order of first appearance.
func groupMembers(seqs []Sequence) [][]int {
	at := map[string]int{}
	var out [][]int
	for i, s := range seqs {
		g, ok := at[s.Group]
		if !ok {
			g = len(out)
			at[s.Group] = g
			out = append(out, nil)
		}
		out[g] = append(out[g], i)
	}
	return out
}

// completeGroups keeps the sequences of groups with size members and counts the groups dropped.
func completeGroups(seqs []Sequence, size int) ([]Sequence, int) {
	var out []Sequence
	dropped := 0
	for _, members := range groupMembers(seqs) {
		if len(members) < size {
			dropped++
			continue
		}
		for _, i := range members {
			out = append(out, seqs[i])
		}
	}
	return out, dropped
}

// stepSums accumulate per-update numbers for the step's means.
type stepSums struct {
	pg, ent, kl, clip, refKL, norm float64
	vf, criticNorm                 float64
	updates, criticUpdates         int
	skipped                        int
}

// filterSequences keeps the groups FilterGroups picks.
func filterSequences(all []Sequence, f GroupFilter, keep float64) []Sequence {
	if f == FilterNone || (f == FilterStd && (keep <= 0 || keep >= 1)) {
		return all
	}
	groups := groupMembers(all)
	stats := make([]GroupStat, len(groups))
	for gi, members := range groups {
		stats[gi].Group = all[members[0]].Group
		for _, i := range members {
			stats[gi].Rewards = append(stats[gi].Rewards, all[i].Reward)
			if all[i].Success {
				stats[gi].Successes++
			}
		}
	}
	kept := map[string]bool{}
	for _, g := range FilterGroups(stats, f, keep) {
		kept[g] = true
	}
	var out []Sequence
	for _, s := range all {
		if kept[s.Group] {
			out = append(out, s)
		}
	}
	return out
}

// score computes, per sequence and trained token, the advantages and returns, the critic's
// values and the reference logprobs (nil when unused), all without gradients.
func (p *PPO) score(seqs []Sequence) (adv, ret, values, refLogp [][]float64, err error) {
	if p.Critic != nil {
		if values, err = p.perToken(p.Critic, seqs, func(pk packed, m *model.Model) (*ts.Tensor, error) {
			h, err := pk.hidden(m)
			if err != nil {
				return nil, err
			}
			v, err := m.Values(h)
			h.MustDrop()
			return v, err
		}); err != nil {
			return
		}
	}
	if p.Ref != nil && p.o.KLCoef > 0 {
		if refLogp, err = p.perToken(p.Ref, seqs, p.logprobs); err != nil {
			return
		}
	}
	adv = make([][]float64, len(seqs))
	ret = make([][]float64, len(seqs))
	switch p.o.Advantage {
	case AdvantageGRPO:
		for _, members := range groupMembers(seqs) {
			rewards := make([]float64, len(members))
			for j, i := range members {
				rewards[j] = seqs[i].Reward
			}
			for j, a := range GroupAdvantages(rewards, p.o.GroupNorm) {
				i := members[j]
				adv[i] = make([]float64, len(seqs[i].OldLogp))
				for k := range adv[i] {
					adv[i][k] = a
				}
			}
		}
		return adv, ret, nil, refLogp, nil
	case AdvantageTurnGAE:
		for i, s := range seqs {
			adv[i], ret[i] = TurnGAE(s.Turn, s.TurnRewards, values[i], p.o.Gamma, p.o.Lambda)
		}
	default:
		for i, s := range seqs {
			if adv[i], ret[i], err = GAE(TokenRewards(s.Reward, len(s.OldLogp)), values[i], p.o.Gamma, p.o.Lambda); err != nil {
				return
			}
		}
	}
	// Whiten with the weights the policy loss gives each token.
	flat := flatten(adv)
	if err = WhitenWeighted(flat, p.lossWeights(seqs)); err != nil {
		return
	}
	at := 0
	for i := range adv {
		copy(adv[i], flat[at:at+len(adv[i])])
		at += len(adv[i])
	}
	return adv, ret, values, refLogp, nil
}

// seqMean says whether the policy loss weighs trajectories alike (seq-mean-token-mean).
func (p *PPO) seqMean() bool { return p.o.LossAgg == LossSeqMeanTokenMean }

// lossWeights is each trained token's weight in the policy loss, in sequence order: 1 for
// token-mean, 1/n for a token of an n-token sequence for seq-mean-token-mean.
func (p *PPO) lossWeights(seqs []Sequence) []float64 {
	var w []float64
	for _, s := range seqs {
		x := 1.0
		if p.seqMean() {
			x = 1 / float64(len(s.OldLogp))
		}
		for range s.OldLogp {
			w = append(w, x)
		}
	}
	return w
}

// perToken runs f (a [N] result at the trained positions) over seqs in micro-batches without
// gradients and splits the result per sequence.
func (p *PPO) perToken(m *model.Model, seqs []Sequence, f func(packed, *model.Model) (*ts.Tensor, error)) ([][]float64, error) {
	out := make([][]float64, 0, len(seqs))
	var err error
	ts.NoGrad(func() {
		for _, c := range chunks(len(seqs), p.o.MicroBatch) {
			pk, e := pack(seqs[c[0]:c[1]], m.Device())
			if e != nil {
				err = e
				return
			}
			t, e := f(pk, m)
			pk.drop()
			if e != nil {
				err = e
				return
			}
			vals := t.Float64Values()
			t.MustDrop()
			for _, part := range split(vals, pk.counts) {
				out = append(out, part)
			}
		}
	})
	return out, err
}

// logprobs is the model's logprob of each trained token, [N].
func (p *PPO) logprobs(pk packed, m *model.Model) (*ts.Tensor, error) {
	logits, err := pk.logits(m, p.o.Temperature)
	if err != nil {
		return nil, err
	}
	lp := TokenLogProbs(logits, pk.targets)
	logits.MustDrop()
	return lp, nil
}

// gatherRows concatenates rows[i] for i in idx (the per-token values of a micro-batch).
func gatherRows(rows [][]float64, seqIdx []int) []float64 {
	var out []float64
	for _, i := range seqIdx {
		out = append(out, rows[i]...)
	}
	return out
}

// pick returns seqs[i] for i in idx.
func pick(seqs []Sequence, idx []int) []Sequence {
	out := make([]Sequence, len(idx))
	for i, j := range idx {
		out[i] = seqs[j]
	}
	return out
}

// tokenCount is the number of trained tokens of the sequences idx.
func tokenCount(seqs []Sequence, idx []int) int {
	n := 0
	for _, i := range idx {
		n += len(seqs[i].OldLogp)
	}
	return n
}

// updateActor is one actor update on the mini-batch idx: the clipped surrogate, minus the
// entropy bonus, plus the KL penalty, token-averaged over the mini-batch.
func (p *PPO) updateActor(seqs []Sequence, idx []int, adv, refLogp [][]float64, sums *stepSums) error {
	total := tokenCount(seqs, idx)
	dev := p.Actor.Device()
	p.ActorOpt.ZeroGrad()
	var pg, ent, kl, clip, refKL float64
	for _, c := range chunks(len(idx), p.o.MicroBatch) {
		part := idx[c[0]:c[1]]
		batch := pick(seqs, part)
		pk, err := pack(batch, dev)
		if err != nil {
			return err
		}
		logits, err := pk.logits(p.Actor, p.o.Temperature)
		if err != nil {
			pk.drop()
			return err
		}
		share := float64(pk.n) / float64(total)
		seqMean := p.seqMean()
		var old []float64
		for _, s := range batch {
			old = append(old, s.OldLogp...)
		}
		a := gatherRows(adv, part)
		neg := make([]float64, len(a))
		for i, x := range a {
			if x < 0 {
				neg[i] = 1
			}
		}
		lp := TokenLogProbs(logits, pk.targets)
		oldT, advT, negT := vector(old, dev), vector(a, dev), vector(neg, dev)
		// The mask weighs the tokens: all alike, or each trajectory's tokens summing to one.
		var ones *ts.Tensor
		if seqMean {
			ones = vector(p.lossWeights(batch), dev)
			share = float64(len(part)) / float64(len(idx))
		} else {
			ones = ts.MustOnes([]int64{int64(pk.n)}, gotch.Float, dev)
		}
		loss, cf, akl := PolicyLoss(lp, oldT, advT, negT, ones, PolicyLossOptions{ClipLow: p.o.ClipLow, ClipHigh: p.o.ClipHigh, DualClip: p.o.DualClip})
		pg += loss.Float64Values()[0] * share
		clip += cf * share
		kl += akl * share
		h := Entropy(logits, ones)
		ent += h.Float64Values()[0] * share
		hs := h.MustMulScalar(ts.FloatScalar(p.o.EntropyCoef), true)
		obj := loss.MustSub(hs, true)
		hs.MustDrop()
		if p.o.KLCoef > 0 {
			refT := vector(gatherRows(refLogp, part), dev)
			k := lowVarKL(lp, refT, ones)
			refKL += k.Float64Values()[0] * share
			ks := k.MustMulScalar(ts.FloatScalar(p.o.KLCoef), true)
			obj = obj.MustAdd(ks, true)
			ks.MustDrop()
			refT.MustDrop()
		}
		obj = obj.MustMulScalar(ts.FloatScalar(share), true)
		obj.MustBackward()
		for _, t := range []*ts.Tensor{obj, lp, oldT, advT, negT, ones, logits} {
			t.MustDrop()
		}
		pk.drop()
	}
	norm, applied := p.ActorOpt.Update(p.o.ActorLR, p.o.GradClip)
	sums.pg += pg
	sums.ent += ent
	sums.kl += kl
	sums.clip += clip
	sums.refKL += refKL
	sums.norm += norm
	sums.updates++
	if !applied {
		sums.skipped++
	}
	return nil
}

// updateCritic is one critic update on the mini-batch idx with the clipped value loss.
func (p *PPO) updateCritic(seqs []Sequence, idx []int, ret, oldV [][]float64, sums *stepSums) error {
	total := tokenCount(seqs, idx)
	dev := p.Critic.Device()
	p.CriticOpt.ZeroGrad()
	var vf float64
	for _, c := range chunks(len(idx), p.o.MicroBatch) {
		part := idx[c[0]:c[1]]
		batch := pick(seqs, part)
		pk, err := pack(batch, dev)
		if err != nil {
			return err
		}
		h, err := pk.hidden(p.Critic)
		if err != nil {
			pk.drop()
			return err
		}
		v, err := p.Critic.Values(h)
		h.MustDrop()
		if err != nil {
			pk.drop()
			return err
		}
		share := float64(pk.n) / float64(total)
		retT, oldT := vector(gatherRows(ret, part), dev), vector(gatherRows(oldV, part), dev)
		ones := ts.MustOnes([]int64{int64(pk.n)}, gotch.Float, dev)
		loss := ValueLoss(v, oldT, retT, ones, p.o.ValueClip)
		vf += loss.Float64Values()[0] * share
		scaled := loss.MustMulScalar(ts.FloatScalar(share), true)
		scaled.MustBackward()
		for _, t := range []*ts.Tensor{scaled, v, retT, oldT, ones} {
			t.MustDrop()
		}
		pk.drop()
	}
	norm, applied := p.CriticOpt.Update(p.o.CriticLR, p.o.GradClip)
	sums.vf += vf
	sums.criticNorm += norm
	sums.criticUpdates++
	if !applied {
		sums.skipped++
	}
	return nil
}

// lowVarKL is the k3 estimator of KL(π‖π_ref) per token, exp(r) − r − 1 with r = ref − logp
// (Schulman's "approximating KL"; verl's low_var_kl), clamped to [−10, 10], token-averaged.
func lowVarKL(logp, refLogp, mask *ts.Tensor) *ts.Tensor {
	r := refLogp.MustSub(logp, false)
	k := r.MustExp(false).MustSub(r, true).MustSubScalar(ts.FloatScalar(1), true).MustClamp(ts.FloatScalar(-10), ts.FloatScalar(10), true)
	r.MustDrop()
	out := maskedMean(k, mask)
	k.MustDrop()
	return out
}

// TurnGAE is the bi-level estimate: each turn's reward sits on its last token; inside a turn
// tokens follow each other undiscounted (γ = λ = 1), and between turns γ and λ apply. turn[i]
// is token i's turn, turnRewards[k] turn k's reward, values the critic's per token.
func TurnGAE(turn []int, turnRewards, values []float64, gamma, lambda float64) (adv, ret []float64) {
	T := len(values)
	adv, ret = make([]float64, T), make([]float64, T)
	next, nextValue := 0.0, 0.0
	for t := T - 1; t >= 0; t-- {
		g, l, r := 1.0, 1.0, 0.0
		if t == T-1 || turn[t+1] != turn[t] {
			g, l, r = gamma, lambda, turnRewards[turn[t]]
		}
		delta := r + g*nextValue - values[t]
		next = delta + g*l*next
		adv[t] = next
		ret[t] = next + values[t]
		nextValue = values[t]
	}
	return adv, ret
}

// explainedVariance is 1 − Var(ret − v) / Var(ret): how much of the returns the critic predicts.
func explainedVariance(ret, v []float64) float64 {
	if len(ret) == 0 {
		return 0
	}
	d := make([]float64, len(ret))
	for i := range ret {
		d[i] = ret[i] - v[i]
	}
	vr := variance(ret)
	if vr < 1e-12 {
		return 0
	}
	return 1 - variance(d)/vr
}

func variance(x []float64) float64 {
	m := 0.0
	for _, v := range x {
		m += v
	}
	m /= float64(len(x))
	s := 0.0
	for _, v := range x {
		s += (v - m) * (v - m)
	}
	return s / float64(len(x))
}

func flatten(rows [][]float64) []float64 {
	var out []float64
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}
