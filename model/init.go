package model

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spa-rl/spa/internal/safefile"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/domain"
	"github.com/spa-rl/spa/model/tokenizer"
)

// InitOptions configure a fresh checkpoint with spa's domain tokenizer.
type InitOptions struct {
	// Preset is "tiny" (the default) or "small".
	Preset string
	// Tokenizer sizes the domain tokenizer and its training text; zero values are domain's
	// defaults.
	Tokenizer domain.Options
	// TokenizerDir, when set, holds a Hugging Face tokenizer (tokenizer.json and
	// tokenizer_config.json, a Qwen2.5 one for the qwen2.5-0.5b preset) to use instead of the
	// domain tokenizer; its files are copied.
	TokenizerDir string
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
	var err error
	var size int
	var eos IDList
	if o.TokenizerDir != "" {
		size, eos, err = copyTokenizer(o.TokenizerDir, dir)
	} else {
		var imEnd int
		size, imEnd, _, err = domain.Write(dir, o.Tokenizer)
		eos = IDList{imEnd}
	}
	if err != nil {
		return Config{}, 0, fmt.Errorf("init %s: tokenizer: %w", dir, err)
	}
	cfg, err := Preset(o.Preset, size)
	if err != nil {
		return Config{}, 0, err
	}
	cfg.EOSTokenID = eos
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

// tokenizerFiles are what a Hugging Face tokenizer directory may hold besides tokenizer.json;
// the ones present are copied with it.
var tokenizerFiles = []string{"tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "generation_config.json"}

// copyTokenizer copies a tokenizer into dir and returns its size and the ids that end a turn
// (<|im_end|>, then <|endoftext|>, as Qwen's instruct checkpoints list them).
func copyTokenizer(from, dir string) (int, IDList, error) {
	data, err := safefile.Read(filepath.Join(from, "tokenizer.json"), 256<<20)
	if err != nil {
		return 0, nil, err
	}
	tok, err := tokenizer.Parse(data)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", from, err)
	}
	if _, err := chat.Load(filepath.Join(from, "tokenizer_config.json")); err != nil {
		return 0, nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644); err != nil {
		return 0, nil, err
	}
	for _, name := range tokenizerFiles {
		b, err := safefile.Read(filepath.Join(from, name), 64<<20)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return 0, nil, err
		}
	}
	var eos IDList
	for _, t := range []string{"<|im_end|>", "<|endoftext|>"} {
		if id, ok := tok.ID(t); ok {
			eos = append(eos, id)
		}
	}
	if len(eos) == 0 {
		return 0, nil, fmt.Errorf("%s: the tokenizer has neither <|im_end|> nor <|endoftext|> to end a turn", from)
	}
	return tok.VocabSize(), eos, nil
}
