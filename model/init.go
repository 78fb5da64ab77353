package model

import (
	"fmt"
	"os"

	"github.com/spa-rl/spa/model/domain"
)

// InitOptions configure a fresh checkpoint with spa's domain tokenizer.
type InitOptions struct {
	// Preset is "tiny" (the default) or "small".
	Preset string
	// Tokenizer sizes the domain tokenizer and its training text; zero values are domain's
	// defaults.
	Tokenizer domain.Options
	// Seed draws the weights.
	Seed uint64
	// DType of the stored weights: "float32" (default) or "bfloat16".
	DType string
	// Adjust changes the config after the preset and the tokenizer have set it (a test's smaller
	// model, a larger vocabulary); nil changes nothing.
	Adjust func(*Config)
}

// Init writes a randomly initialised checkpoint into dir: the domain tokenizer trained on the
// environments' text, then a preset model sized to it, ending turns with <|im_end|>. It is the one
// way spa makes a model from scratch (spa model init, spa run's init stage, benchmarks, tests).
// Like New, it must run on a torch thread (torchrt).
func Init(dir string, o InitOptions) (Config, int64, error) {
	if o.Preset == "" {
		o.Preset = "tiny"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Config{}, 0, fmt.Errorf("init %s: %w", dir, err)
	}
	size, imEnd, _, err := domain.Write(dir, o.Tokenizer)
	if err != nil {
		return Config{}, 0, fmt.Errorf("init %s: tokenizer: %w", dir, err)
	}
	cfg, err := Preset(o.Preset, size)
	if err != nil {
		return Config{}, 0, err
	}
	cfg.EOSTokenID = IDList{imEnd}
	if o.Adjust != nil {
		o.Adjust(&cfg)
	}
	m, err := New(cfg, Options{Seed: o.Seed})
	if err != nil {
		return Config{}, 0, fmt.Errorf("init %s: %w", dir, err)
	}
	defer m.Close()
	if err := Save(dir, m, SaveOptions{DType: o.DType}); err != nil {
		return Config{}, 0, fmt.Errorf("init %s: %w", dir, err)
	}
	return cfg, m.NumParams(), nil
}
