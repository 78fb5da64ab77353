package harness

import (
	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model"
)

// The functions below map the configuration onto the typed options of the packages that do the
// work, so that those packages never read config themselves. The pipeline and cmd/spa share them.

// BusOptions maps the bus section onto connection options; name is the client name the server
// shows.
func BusOptions(c config.Bus, name string) bus.Options {
	return bus.Options{
		URL: c.URL, Name: name, User: c.User, Password: c.Password, Token: c.Token,
		CredsFile: c.CredsFile, NKeyFile: c.NKeyFile, TLSCA: c.TLSCA, TLSCert: c.TLSCert, TLSKey: c.TLSKey,
		Timeout: c.Timeout, StoreDir: c.StoreDir, Listen: c.Listen,
	}
}

// SFTOptions maps the learner section onto SFT options.
func SFTOptions(l config.Learner, seed uint64) learner.SFTOptions {
	return learner.SFTOptions{
		LR: l.SFT.LR, Beta1: l.Beta1, Beta2: l.Beta2, WeightDecay: l.WeightDecay, GradClip: l.GradClip,
		WarmupRatio: l.SFT.WarmupRatio, Epochs: l.SFT.Epochs, BatchSize: l.SFT.BatchSize, MicroBatch: l.MicroBatch, Seed: seed,
	}
}

// PPOOptions maps the learner section onto PPO options; the rollout section gives the sampling
// temperature and the group size.
func PPOOptions(l config.Learner, r config.Rollout, seed uint64) learner.PPOOptions {
	p := l.PPO
	o := learner.PPOOptions{
		ActorLR: p.ActorLR, CriticLR: p.CriticLR, ClipLow: p.ClipLow, ClipHigh: p.ClipHigh, DualClip: p.DualClip,
		EntropyCoef: p.EntropyCoef, KLCoef: p.KLCoef, Gamma: p.Gamma, Lambda: p.Lambda, ValueClip: p.ValueClip,
		KeepGroupRatio: p.KeepGroupRatio, MiniBatches: p.MiniBatches, Epochs: p.Epochs,
		Beta1: l.Beta1, Beta2: l.Beta2, WeightDecay: l.WeightDecay, GradClip: l.GradClip,
		Advantage: learner.Advantage(p.Advantage), LossAgg: learner.LossAgg(p.LossAgg), Temperature: r.Temperature,
		MicroBatch: l.MicroBatch, Seed: seed,
		GroupNorm: learner.GroupNorm(p.GroupNorm), GroupFilter: learner.GroupFilter(p.GroupFilter), RewardScale: p.RewardScale,
		CriticWarmup: p.CriticWarmup, CriticEpochs: p.CriticEpochs, ShuffleRewards: p.ShuffleRewards,
	}
	if p.CompleteGroups {
		o.GroupSize = r.GroupSize
	}
	return o
}

// PolicyOptions maps the learner section onto how a policy is loaded for training: the device,
// and LoRA adapters when learner.lora.rank > 0.
func PolicyOptions(l config.Learner, seed uint64) (learner.PolicyOptions, error) {
	dev, err := model.ParseDevice(l.Device)
	if err != nil {
		return learner.PolicyOptions{}, err
	}
	return learner.PolicyOptions{Device: dev, LoRA: model.LoRAOptions{Rank: l.LoRA.Rank, Alpha: l.LoRA.Alpha, Targets: l.LoRA.Targets, Seed: seed}}, nil
}

// CheckSampling refuses rollout settings PPO cannot train on (learner.CheckSampling).
func CheckSampling(r config.Rollout) error {
	return learner.CheckSampling(r.Temperature, r.TopP, r.TopK)
}

// NewPPO loads a PPO trainer from dir as the configuration says (learner.NewPPOFrom), after
// checking the rollout's sampling.
func NewPPO(dir string, l config.Learner, r config.Rollout, seed uint64) (*learner.PPO, func(), error) {
	if err := CheckSampling(r); err != nil {
		return nil, nil, err
	}
	po, err := PolicyOptions(l, seed)
	if err != nil {
		return nil, nil, err
	}
	return learner.NewPPOFrom(dir, po, PPOOptions(l, r, seed))
}
