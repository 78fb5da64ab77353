package learner

import (
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

// PPOOptionsFrom maps the configuration's learner section onto PPO options; temperature is the
// rollout's sampling temperature.
func PPOOptionsFrom(l config.Learner, temperature float64, seed uint64) PPOOptions {
	p := l.PPO
	return PPOOptions{
		ActorLR: p.ActorLR, CriticLR: p.CriticLR, ClipLow: p.ClipLow, ClipHigh: p.ClipHigh, DualClip: p.DualClip,
		EntropyCoef: p.EntropyCoef, KLCoef: p.KLCoef, Gamma: p.Gamma, Lambda: p.Lambda, ValueClip: p.ValueClip,
		KeepGroupRatio: p.KeepGroupRatio, MiniBatches: p.MiniBatches, Epochs: p.Epochs,
		Beta1: l.Beta1, Beta2: l.Beta2, WeightDecay: l.WeightDecay, GradClip: l.GradClip,
		Advantage: p.Advantage, LossAgg: p.LossAgg, Temperature: temperature, MicroBatch: l.MicroBatch, Seed: seed,
	}
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
func NewPPOFrom(dir string, l config.Learner, temperature float64, seed uint64) (p *PPO, closeAll func(), err error) {
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
	if l.PPO.Advantage != "grpo" {
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
	if p, err = NewPPO(actor, critic, ref, PPOOptionsFrom(l, temperature, seed)); err != nil {
		free()
		return nil, nil, err
	}
	return p, func() { p.Close(); free() }, nil
}
