package model

import "github.com/spa-rl/spa/model/weights"

// ReadSafetensors reads every tensor of a checkpoint directory as float32, with the checks of
// weights.ReadDir (shard names inside dir, headers against file sizes, no NaN or infinity).
func ReadSafetensors(dir string) (map[string]Param, error) {
	ts, err := weights.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Param, len(ts))
	for name, t := range ts {
		out[name] = Param(t)
	}
	return out, nil
}
