package chat

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spa-rl/spa/model/tokenizer"
)

const qwen3Config = "../../../shared/testdata/tokenizer/qwen3/tokenizer_config.json"

// TestQwen3TemplateRenderings compares Render with jinja2's rendering of the real Qwen3 template
// (testdata/qwen3.jsonl, made by testdata/gen_qwen3.py).
func TestQwen3TemplateRenderings(t *testing.T) {
	if _, err := os.Stat(qwen3Config); err != nil {
		t.Skipf("shared tokenizer fixtures not found: %v", err)
	}
	tmpl, err := Load(qwen3Config)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.Family != Qwen3 {
		t.Fatalf("family %q, want qwen3", tmpl.Family)
	}
	f, err := os.Open("testdata/qwen3.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var c struct {
			Name       string    `json:"name"`
			Messages   []Message `json:"messages"`
			Generation bool      `json:"add_generation_prompt"`
			Text       string    `json:"text"`
		}
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		got, err := tmpl.Render(c.Messages, c.Generation)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if got != c.Text {
			t.Errorf("%s:\n got %q\nwant %q", c.Name, got, c.Text)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d cases", n)
	}
}

// TestTemplateIDsMatchTransformers compares spa's rendering, encoded by spa's tokenizer, with
// transformers' apply_chat_template(tokenize=True) on the shared Qwen3 tokenizer folder
// (testdata/qwen3-hf.jsonl, made by testdata/gen_hf.py in make interop's pinned environment):
// the same text and the same ids, special tokens included.
func TestTemplateIDsMatchTransformers(t *testing.T) {
	if _, err := os.Stat(qwen3Config); err != nil {
		t.Skipf("shared tokenizer fixtures not found: %v", err)
	}
	tmpl, err := Load(qwen3Config)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(filepath.Dir(qwen3Config), "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/qwen3-hf.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var c struct {
			Name       string    `json:"name"`
			Messages   []Message `json:"messages"`
			Generation bool      `json:"add_generation_prompt"`
			Text       string    `json:"text"`
			IDs        []int     `json:"ids"`
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatal(err)
		}
		text, err := tmpl.Render(c.Messages, c.Generation)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if text != c.Text {
			t.Errorf("%s: text\n got %q\nwant %q", c.Name, text, c.Text)
		}
		if ids := tok.Encode(text); !slices.Equal(ids, c.IDs) {
			t.Errorf("%s: ids\n got %v\nwant %v", c.Name, ids, c.IDs)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d cases", n)
	}
}

func TestChatMLAndQwen25Default(t *testing.T) {
	msgs := []Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "<think>x</think>yo"}}
	plain := &Template{Family: ChatML}
	got, _ := plain.Render(msgs, false)
	if want := "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>x</think>yo<|im_end|>\n"; got != want {
		t.Errorf("chatml: %q", got)
	}
	q25, err := Parse(`{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{% endif %}...<|im_start|>`)
	if err != nil || q25.Family != ChatML || q25.DefaultSystem == "" {
		t.Fatalf("qwen2.5-style template: %+v %v", q25, err)
	}
	got, _ = q25.Render(msgs[:1], true)
	if !strings.HasPrefix(got, "<|im_start|>system\nYou are Qwen") || !strings.HasSuffix(got, "<|im_start|>assistant\n") {
		t.Errorf("qwen2.5 default system: %q", got)
	}
	for _, bad := range [][]Message{nil, {{Role: "tool", Content: "x"}}} {
		if _, err := plain.Render(bad, true); err == nil {
			t.Errorf("%v rendered", bad)
		}
	}
	if _, err := Parse("{{ bos_token }}[INST]"); err == nil {
		t.Error("a non-ChatML template was accepted")
	}
}
