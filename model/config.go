// Package model is spa's policy: a Qwen2-family decoder in gotch (libtorch) that reads and writes
// Hugging Face checkpoints, so what spa trains any vLLM serves and a Qwen2.5 checkpoint downloaded
// elsewhere loads here. The tokenizer and chat template live in the gotch-free subpackages
// model/tokenizer and model/chat.
package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spa-rl/spa/internal/safefile"
)

// Config is a Hugging Face config.json of the Qwen2 architecture (Qwen2ForCausalLM).
type Config struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	VocabSize             int      `json:"vocab_size"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	RopeTheta             float64  `json:"rope_theta"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	HiddenAct             string   `json:"hidden_act"`
	InitializerRange      float64  `json:"initializer_range"`
	TorchDType            string   `json:"torch_dtype"`
	BOSTokenID            *int     `json:"bos_token_id,omitempty"`
	EOSTokenID            IDList   `json:"eos_token_id,omitempty"`
	UseSlidingWindow      bool     `json:"use_sliding_window"`
	SlidingWindow         *int     `json:"sliding_window,omitempty"`
	MaxWindowLayers       int      `json:"max_window_layers,omitempty"`
	AttentionDropout      float64  `json:"attention_dropout"`
	UseCache              bool     `json:"use_cache"`
	// RopeScaling is refused when set: spa's rotary embedding has no scaling variants.
	RopeScaling json.RawMessage `json:"rope_scaling,omitempty"`
	// TransformersVersion is written for tools that read it.
	TransformersVersion string `json:"transformers_version,omitempty"`
}

// HeadDim is the width of one attention head.
func (c Config) HeadDim() int { return c.HiddenSize / c.NumAttentionHeads }

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	positive := map[string]int{
		"vocab_size": c.VocabSize, "hidden_size": c.HiddenSize, "intermediate_size": c.IntermediateSize,
		"num_hidden_layers": c.NumHiddenLayers, "num_attention_heads": c.NumAttentionHeads,
		"num_key_value_heads": c.NumKeyValueHeads, "max_position_embeddings": c.MaxPositionEmbeddings,
	}
	for _, k := range []string{"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "max_position_embeddings"} {
		if positive[k] <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0, got %d", k, positive[k]))
		}
	}
	if c.NumAttentionHeads > 0 && c.HiddenSize%c.NumAttentionHeads != 0 {
		errs = append(errs, fmt.Errorf("hidden_size %d is not a multiple of num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads))
	}
	if c.NumKeyValueHeads > 0 && c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		errs = append(errs, fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads))
	}
	if c.NumAttentionHeads > 0 && c.HeadDim()%2 != 0 {
		errs = append(errs, fmt.Errorf("head dimension %d must be even for rotary embeddings", c.HeadDim()))
	}
	if c.RopeTheta <= 0 {
		errs = append(errs, fmt.Errorf("rope_theta must be > 0, got %g", c.RopeTheta))
	}
	if c.RMSNormEps <= 0 {
		errs = append(errs, fmt.Errorf("rms_norm_eps must be > 0, got %g", c.RMSNormEps))
	}
	if c.HiddenAct != "silu" {
		errs = append(errs, fmt.Errorf("hidden_act %q is not supported (Qwen2 uses silu)", c.HiddenAct))
	}
	if len(c.RopeScaling) > 0 && string(c.RopeScaling) != "null" {
		errs = append(errs, fmt.Errorf("rope_scaling %s is not supported", c.RopeScaling))
	}
	if c.UseSlidingWindow {
		errs = append(errs, errors.New("use_sliding_window is not supported"))
	}
	if c.ModelType != "" && c.ModelType != "qwen2" {
		errs = append(errs, fmt.Errorf("model_type %q is not qwen2", c.ModelType))
	}
	if len(errs) == 0 {
		if _, err := ParameterCount(c, false); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("model config: %w", errors.Join(errs...))
	}
	return nil
}

// Preset returns a named configuration for a vocabulary of vocab tokens. "tiny" trains and
// generates at useful speed on two CPU cores; "small" is a step up for machines with more.
func Preset(name string, vocab int) (Config, error) {
	c := Config{
		Architectures: []string{"Qwen2ForCausalLM"}, ModelType: "qwen2", VocabSize: vocab,
		RopeTheta: 10000, RMSNormEps: 1e-6, HiddenAct: "silu", InitializerRange: 0.02,
		TorchDType: "float32", TieWordEmbeddings: true, UseCache: true, MaxPositionEmbeddings: 4096,
	}
	switch name {
	case "tiny":
		c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads = 128, 384, 4, 4, 2
	case "small":
		c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads = 384, 1024, 8, 6, 2
	case "qwen2.5-0.5b":
		// Qwen/Qwen2.5-0.5B's config.json: 494,032,768 parameters. Its embedding has 151,936 rows
		// (the tokenizer's 151,665 padded); a larger tokenizer gets its own size.
		c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads = 896, 4864, 24, 14, 2
		c.VocabSize, c.RopeTheta, c.MaxPositionEmbeddings, c.TorchDType = max(vocab, 151936), 1e6, 32768, "bfloat16"
		window := 32768
		c.SlidingWindow, c.MaxWindowLayers = &window, 21
	default:
		return Config{}, fmt.Errorf("unknown model preset %q (want %s)", name, strings.Join(Presets, ", "))
	}
	return c, c.Validate()
}

// Presets are the names Preset accepts.
var Presets = []string{"tiny", "small", "qwen2.5-0.5b"}

// NumParams counts the parameters a model of this config has (the embedding once when tied), as
// Hugging Face's num_parameters does, without making it.
func (c Config) NumParams() int64 {
	h, inter, kv := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.NumKeyValueHeads*c.HeadDim())
	attn := h*h + h + 2*(h*kv+kv) + h*h // q with bias, k and v with bias, o
	layer := attn + 3*h*inter + 2*h     // gate, up, down; two norms
	n := int64(c.VocabSize)*h + int64(c.NumHiddenLayers)*layer + h
	if !c.TieWordEmbeddings {
		n += int64(c.VocabSize) * h
	}
	return n
}

// maxConfigBytes bounds config.json; real ones are a few kilobytes.
const maxConfigBytes = 4 << 20

// LoadConfig reads dir/config.json.
func LoadConfig(dir string) (Config, error) {
	data, err := safefile.Read(filepath.Join(dir, "config.json"), maxConfigBytes)
	if err != nil {
		return Config{}, fmt.Errorf("model config: %w", err)
	}
	c := Config{HiddenAct: "silu", RopeTheta: 10000, RMSNormEps: 1e-6}
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("model config %s: %w", dir, err)
	}
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", dir, err)
	}
	return c, nil
}

// SaveConfig writes dir/config.json.
func SaveConfig(dir string, c Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), append(data, '\n'), 0o644)
}

// IDList is a token id or a list of them (config files use both forms).
type IDList []int

// UnmarshalJSON accepts 7 or [7, 8].
func (l *IDList) UnmarshalJSON(data []byte) error {
	var one int
	if json.Unmarshal(data, &one) == nil {
		*l = IDList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(data, &many); err != nil {
		return fmt.Errorf("want a token id or a list of them, got %s", data)
	}
	*l = many
	return nil
}

// MarshalJSON writes a single id as a number, as Hugging Face does.
func (l IDList) MarshalJSON() ([]byte, error) {
	if len(l) == 1 {
		return json.Marshal(l[0])
	}
	return json.Marshal([]int(l))
}
