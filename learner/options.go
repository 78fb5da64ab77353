package learner

import (
	"fmt"

	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/model"
)

// SFTOptionsFrom maps the configuration's learner section onto SFT options.
func SFTOptionsFrom(l config.Learner, seed uint64) SFTOptions {
	return SFTOptions{
		LR: l.SFT.LR, Beta1: l.Beta1, Beta2: l.Beta2, WeightDecay: l.WeightDecay, GradClip: l.GradClip,
		WarmupRatio: l.SFT.WarmupRatio, Epochs: l.SFT.Epochs, BatchSize: l.SFT.BatchSize, MicroBatch: l.MicroBatch, Seed: seed,
	}
}

// PPOOptionsFrom maps the configuration's learner section onto PPO options; the rollout section
// gives the sampling temperature and the group size.
func PPOOptionsFrom(l config.Learner, r config.Rollout, seed uint64) PPOOptions {
	p := l.PPO
	o := PPOOptions{
		ActorLR: p.ActorLR, CriticLR: p.CriticLR, ClipLow: p.ClipLow, ClipHigh: p.ClipHigh, DualClip: p.DualClip,
		EntropyCoef: p.EntropyCoef, KLCoef: p.KLCoef, Gamma: p.Gamma, Lambda: p.Lambda, ValueClip: p.ValueClip,
		KeepGroupRatio: p.KeepGroupRatio, MiniBatches: p.MiniBatches, Epochs: p.Epochs,
		Beta1: l.Beta1, Beta2: l.Beta2, WeightDecay: l.WeightDecay, GradClip: l.GradClip,
		Advantage: Advantage(p.Advantage), LossAgg: LossAgg(p.LossAgg), Temperature: r.Temperature, MicroBatch: l.MicroBatch, Seed: seed,
		GroupNorm: GroupNorm(p.GroupNorm), GroupFilter: GroupFilter(p.GroupFilter), RewardScale: p.RewardScale,
		CriticWarmup: p.CriticWarmup, ShuffleRewards: p.ShuffleRewards,
	}
	if p.CompleteGroups {
		o.GroupSize = r.GroupSize
	}
	return o
}

// CheckSampling refuses rollout settings PPO cannot train on: the learner recomputes logprobs
// under the full softmax at the rollout's temperature, so nucleus or top-k sampling (which
// renormalise over fewer tokens) would bias every importance ratio, and greedy decoding has no
// logprobs to compare.
func CheckSampling(r config.Rollout) error {
	switch {
	case r.Temperature <= 0:
		return fmt.Errorf("training rollouts need rollout.temperature > 0 (greedy decoding is for evaluation)")
	case r.TopP < 1 || r.TopK > 0:
		return fmt.Errorf("training rollouts must sample the full distribution (rollout.top_p 1, rollout.top_k 0; have %g and %d): "+
			"the learner's logprobs cover every token, so truncated sampling biases the importance ratio", r.TopP, r.TopK)
	}
	return nil
}

// LoadPolicy loads a checkpoint on l.Device for training, with LoRA adapters when l.LoRA.Rank > 0.
func LoadPolicy(dir string, l config.Learner, seed uint64) (*model.Model, error) {
	dev, err := model.ParseDevice(l.Device)
	if err != nil {
		return nil, err
	}
	m, err := model.Load(dir, model.Options{Device: dev})
	if err != nil {
		return nil, err
	}
	if l.LoRA.Rank > 0 {
		if err := m.EnableLoRA(model.LoRAOptions{Rank: l.LoRA.Rank, Alpha: l.LoRA.Alpha, Targets: l.LoRA.Targets, Seed: seed}); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// NewPPOFrom loads the actor from dir (with LoRA when configured), makes the critic from it (none
// for GRPO) and the frozen reference (when kl_coef > 0). closeAll frees the trainer and the models.
func NewPPOFrom(dir string, l config.Learner, r config.Rollout, seed uint64) (p *PPO, closeAll func(), err error) {
	if err := CheckSampling(r); err != nil {
		return nil, nil, err
	}
	actor, err := LoadPolicy(dir, l, seed)
	if err != nil {
		return nil, nil, err
	}
	models := []*model.Model{actor}
	free := func() {
		for _, m := range models {
			m.Close()
		}
	}
	var critic, ref *model.Model
	if Advantage(l.PPO.Advantage).UsesCritic() {
		if critic, err = model.NewCritic(actor, seed+1); err != nil {
			free()
			return nil, nil, err
		}
		models = append(models, critic)
	}
	if l.PPO.KLCoef > 0 {
		dev, _ := model.ParseDevice(l.Device)
		if ref, err = model.Load(dir, model.Options{Device: dev}); err != nil {
			free()
			return nil, nil, err
		}
		models = append(models, ref)
	}
	if p, err = NewPPO(actor, critic, ref, PPOOptionsFrom(l, r, seed)); err != nil {
		free()
		return nil, nil, err
	}
	return p, func() { p.Close(); free() }, nil
}
