package domain

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/tokenizer"
)

func TestDomainTokenizerIsCompactAndExact(t *testing.T) {
	dir := t.TempDir()
	vocab, imEnd, pad, err := Write(dir, Options{VocabSize: 512, Seeds: 40})
	if err != nil {
		t.Fatal(err)
	}
	if vocab != 512 || imEnd != 512-len(Added)+2 || pad != 512-len(Added) {
		t.Errorf("vocab %d, <|im_end|> %d, <|endoftext|> %d", vocab, imEnd, pad)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.Load(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil || tmpl.Family != chat.ChatML || tmpl.DefaultSystem != "" {
		t.Fatalf("chat template: %+v %v", tmpl, err)
	}
	env, _ := envs.New("sokoban", "")
	env.Reset(12345) // a seed outside the corpus
	prompt, _ := tmpl.Render([]chat.Message{
		{Role: "system", Content: env.Spec().Instructions},
		{Role: "user", Content: "Turn 1:\nState:\n" + env.Render(envs.Coords)},
		{Role: "assistant", Content: "<think><observation>x</observation></think><answer>Up</answer>"},
	}, true)
	ids := tok.Encode(prompt)
	back, err := tok.Decode(ids, false)
	if err != nil || back != prompt {
		t.Fatalf("round trip: %q, %v", back, err)
	}
	ratio := float64(len(prompt)) / float64(len(ids))
	t.Logf("%d bytes -> %d tokens (%.1f bytes/token)", len(prompt), len(ids), ratio)
	if ratio < 2 {
		t.Errorf("only %.1f bytes per token; the domain tokenizer should compress its own text", ratio)
	}
	for _, tag := range []string{"<think>", "<|im_start|>", "</answer>"} {
		if id, ok := tok.ID(tag); !ok || !containsID(tok.Encode("x"+tag+"y"), id) {
			t.Errorf("%s is not a single token", tag)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if !strings.Contains(string(data), `"eos_token": "<|im_end|>"`) {
		t.Errorf("tokenizer_config.json: %s", data)
	}
}

func containsID(ids []int, id int) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func TestTrainingIsDeterministic(t *testing.T) {
	a, err := TokenizerJSON(Options{VocabSize: 400, Seeds: 10})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := TokenizerJSON(Options{VocabSize: 400, Seeds: 10})
	if string(a) != string(b) {
		t.Error("two trainings on the same corpus differ")
	}
}
