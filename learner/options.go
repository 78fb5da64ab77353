package learner

import (
	"fmt"

	"github.com/sugarme/gotch"

	"github.com/spa-rl/spa/model"
)

// CheckSampling refuses rollout settings PPO cannot train on: the learner recomputes logprobs
// under the full softmax at the rollout's temperature, so nucleus or top-k sampling (which
// renormalise over fewer tokens) would bias every importance ratio, and greedy decoding has no
// logprobs to compare.
func CheckSampling(temperature, topP float64, topK int) error {
	switch {
	case temperature <= 0:
		return fmt.Errorf("training rollouts need rollout.temperature > 0 (greedy decoding is for evaluation)")
	case topP < 1 || topK > 0:
		return fmt.Errorf("training rollouts must sample the full distribution (rollout.top_p 1, rollout.top_k 0; have %g and %d): "+
			"the learner's logprobs cover every token, so truncated sampling biases the importance ratio", topP, topK)
	}
	return nil
}

// PolicyOptions say how to load a policy for training.
type PolicyOptions struct {
	Device gotch.Device
	// LoRA trains adapters of LoRA.Rank (0: full fine-tuning).
	LoRA model.LoRAOptions
}

// LoadPolicy loads a checkpoint on o.Device for training, with LoRA adapters when o.LoRA.Rank > 0.
func LoadPolicy(dir string, o PolicyOptions) (*model.Model, error) {
	m, err := model.Load(dir, model.Options{Device: o.Device})
	if err != nil {
		return nil, err
	}
	if o.LoRA.Rank > 0 {
		if err := m.EnableLoRA(o.LoRA); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// NewPPOFrom loads the actor from dir (with LoRA when po asks), makes the critic from it (none for
// GRPO) and the frozen reference (when o.KLCoef > 0). closeAll frees the trainer and the models.
func NewPPOFrom(dir string, po PolicyOptions, o PPOOptions) (p *PPO, closeAll func(), err error) {
	if err := CheckSampling(o.Temperature, 1, 0); err != nil {
		return nil, nil, err
	}
	actor, err := LoadPolicy(dir, po)
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
	adv, err := ParseAdvantage(string(o.Advantage))
	if err != nil {
		free()
		return nil, nil, err
	}
	if adv.UsesCritic() {
		if critic, err = model.NewCritic(actor, o.Seed+1); err != nil {
			free()
			return nil, nil, err
		}
		models = append(models, critic)
	}
	if o.KLCoef > 0 {
		if ref, err = model.Load(dir, model.Options{Device: po.Device}); err != nil {
			free()
			return nil, nil, err
		}
		models = append(models, ref)
	}
	if p, err = NewPPO(actor, critic, ref, o); err != nil {
		free()
		return nil, nil, err
	}
	return p, func() { p.Close(); free() }, nil
}
