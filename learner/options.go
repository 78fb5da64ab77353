package learner

import "github.com/spa-rl/spa/config"

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
		Advantage: p.Advantage, Temperature: temperature, MicroBatch: l.MicroBatch, Seed: seed,
	}
}
