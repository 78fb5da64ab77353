package harness

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Presets are named sizes of the pipeline, as configuration values that sit above the defaults
// and below a config file, SPA_* variables and flags. smoke is for tests (minutes); quick is the
// README's `make run` (Sokoban with the tiny model, about 14 minutes on 2 cores); long is quick
// at the paper's episode length, for about an hour; paper is the paper's hyperparameters (the
// defaults), for GPUs, vLLM and a pretrained run.model.
var Presets = map[string]map[string]string{
	"smoke": {
		"run.methods": "spa,vanilla", "run.selfplay_episodes": "16", "run.warmup_episodes": "16",
		"run.val_puzzles": "4", "run.val_k": "2",
		"rollout.groups": "2", "rollout.group_size": "2", "rollout.workers": "4", "rollout.max_turns": "2", "rollout.max_tokens": "48",
		"learner.sft.epochs": "1", "learner.sft.batch_size": "8", "learner.sft.lr": "1e-3",
		"learner.ppo.steps": "2", "learner.ppo.validate_every": "1", "learner.ppo.keep_group_ratio": "1",
		"learner.ppo.actor_lr": "1e-4", "learner.ppo.critic_lr": "1e-3",
		"server.max_model_len": "2048", "server.kv_cache_mb": "128",
	},
	"quick": quick,
	// long is quick with the paper's 5 turns, more than three times the PPO steps, and the
	// paper's 128 validation puzzles; its contexts are longer, so the server gets room for them.
	"long": extend(quick, map[string]string{
		"rollout.max_turns": "5", "run.selfplay_episodes": "768", "run.val_puzzles": "128",
		"learner.ppo.steps": "80", "learner.ppo.validate_every": "40",
		"server.max_model_len": "3072", "server.kv_cache_mb": "512",
	}),
	"paper": {
		"run.methods": "spa,vanilla,state-estimation",
	},
}

// quick is the README's `make run`.
var quick = map[string]string{
	"run.methods": "spa,vanilla", "run.selfplay_episodes": "384", "run.warmup_episodes": "512", "run.warmup_epochs": "4",
	"run.val_puzzles": "64", "run.val_k": "8",
	"rollout.groups": "8", "rollout.group_size": "8", "rollout.workers": "16", "rollout.max_turns": "3", "rollout.max_tokens": "160",
	"run.warmup_lr": "1e-3", "run.sft_replay": "1", "learner.sft.epochs": "2", "learner.sft.batch_size": "16", "learner.sft.lr": "1e-3",
	"learner.ppo.steps": "24", "learner.ppo.validate_every": "12", "learner.ppo.group_filter": "success",
	"learner.ppo.advantage": "grpo", "learner.ppo.loss_agg": "seq-mean-token-mean", "learner.ppo.actor_lr": "5e-5",
	"learner.ppo.epochs": "2", "learner.ppo.mini_batches": "2",
	"server.max_model_len": "2048", "server.kv_cache_mb": "256",
}

// extend is base with the values of over added or replaced.
func extend(base, over map[string]string) map[string]string {
	out := maps.Clone(base)
	maps.Copy(out, over)
	return out
}

// Preset returns a preset's values by name, with an error naming the choices.
func Preset(name string) (map[string]string, error) {
	p, ok := Presets[name]
	if !ok {
		names := make([]string, 0, len(Presets))
		for n := range Presets {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("unknown preset %q (want %s)", name, strings.Join(names, ", "))
	}
	return p, nil
}
