// Package domain builds the tokenizer and chat template of spa's tiny from-scratch model: a
// byte-level BPE trained on the environments' own text, ChatML special tokens, and the SPA tags as
// single tokens. It writes the same files a Hugging Face checkpoint has (tokenizer.json,
// tokenizer_config.json), so vLLM and transformers read them too. No libtorch.
package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/model/tokenizer"
)

// Special tokens, in id order after the learned vocabulary. The ChatML markers are special
// (skipped by skip_special_tokens); the SPA tags are not, so they survive decoding.
var Added = []tokenizer.AddedToken{
	{Content: "<|endoftext|>", Special: true},
	{Content: "<|im_start|>", Special: true},
	{Content: "<|im_end|>", Special: true},
	{Content: "<think>"}, {Content: "</think>"},
	{Content: "<answer>"}, {Content: "</answer>"},
	{Content: "<observation>"}, {Content: "</observation>"},
	{Content: "<prediction>"}, {Content: "</prediction>"},
}

// ChatTemplate is plain ChatML in Jinja, as tokenizer_config.json carries it.
const ChatTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// promptText is wording spa's prompts use around the environments' own text.
var promptText = []string{
	"You are a helpful assistant. Think step by step, then give your answer.",
	"Turn 1:\nState:\n", "Turn 2:\nState:\n", "Turn 10:\nState:\n", "Reward: -0.1\n", "Reward: 10.0\n",
	"<think><observation>The player is at (1, 2).</observation><prediction>The player will be at (2, 2).</prediction></think><answer>Down || Right</answer>",
	"Your answer must be <think>...</think><answer>...</answer>, with at most 3 actions separated by ||.",
	"Invalid action. Format penalty -0.1.", "The puzzle is solved.", "You have no actions left.",
}

// Options size the tokenizer.
type Options struct {
	// VocabSize counts every id, added tokens included; zero means 1024.
	VocabSize int
	// Seeds is how many episodes per environment variant the corpus samples; zero means 200.
	Seeds int
}

// TokenizerJSON trains the domain tokenizer and returns its tokenizer.json.
func TokenizerJSON(opts Options) ([]byte, error) {
	if opts.VocabSize == 0 {
		opts.VocabSize = 1024
	}
	if opts.Seeds == 0 {
		opts.Seeds = 200
	}
	corpus, err := envs.Corpus(opts.Seeds)
	if err != nil {
		return nil, err
	}
	for range 50 { // weight the prompt wording like the many states it surrounds
		corpus = append(corpus, promptText...)
	}
	return tokenizer.Train(corpus, tokenizer.TrainOptions{VocabSize: opts.VocabSize, Added: Added})
}

// Write trains the tokenizer and writes tokenizer.json and tokenizer_config.json into dir. It
// returns the vocabulary size and the ids of <|im_end|> (end of turn) and <|endoftext|> (padding).
func Write(dir string, opts Options) (vocab, imEnd, pad int, err error) {
	data, err := TokenizerJSON(opts)
	if err != nil {
		return 0, 0, 0, err
	}
	tok, err := tokenizer.Parse(data)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("domain tokenizer does not load back: %w", err)
	}
	imEnd, _ = tok.ID("<|im_end|>")
	pad, _ = tok.ID("<|endoftext|>")
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644); err != nil {
		return 0, 0, 0, err
	}
	decoder := map[string]any{}
	for _, a := range tok.Added() {
		decoder[fmt.Sprint(a.ID)] = map[string]any{"content": a.Content, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": a.Special}
	}
	cfg := map[string]any{
		"tokenizer_class": "Qwen2TokenizerFast", "chat_template": ChatTemplate, "added_tokens_decoder": decoder,
		"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": nil, "unk_token": nil,
		"clean_up_tokenization_spaces": false, "model_max_length": 4096, "split_special_tokens": false,
		"errors": "replace", "add_prefix_space": false,
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		return 0, 0, 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), out.Bytes(), 0o644); err != nil {
		return 0, 0, 0, err
	}
	return tok.VocabSize(), imEnd, pad, nil
}
