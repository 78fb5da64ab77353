// Package chat renders conversations into prompt text the way a checkpoint's chat template does,
// for the message shapes spa uses (system, user and assistant messages, with or without the
// generation prompt). There is no Jinja engine here: Parse recognises the template families spa
// supports from the template text and renders them in Go; tests compare against renderings made
// by jinja2 from the real templates. No libtorch, so rollout workers use it directly.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spa-rl/spa/internal/safefile"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Family names a chat template family.
type Family string

const (
	// ChatML is plain <|im_start|>role\ncontent<|im_end|>\n (Qwen2, Qwen2.5, spa's tiny model).
	ChatML Family = "chatml"
	// Qwen3 is ChatML plus Qwen3's reasoning rules: <think> blocks are dropped from assistant
	// turns before the last user message, and assistant turns after it are rendered as
	// <think>\n...\n</think>\n\n followed by the answer.
	Qwen3 Family = "qwen3"
)

// Template renders conversations.
type Template struct {
	Family Family
	// DefaultSystem is inserted when a conversation has no system message (Qwen2.5's template
	// does this); empty means none.
	DefaultSystem string
}

// qwen25DefaultSystem is what Qwen2.5's template inserts when the conversation has no system message.
const qwen25DefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

// Parse recognises a chat template's family from its Jinja source.
func Parse(source string) (*Template, error) {
	switch {
	case !strings.Contains(source, "<|im_start|>"):
		return nil, errors.New("chat template is not ChatML (no <|im_start|>); spa renders ChatML-family templates only")
	case strings.Contains(source, "reasoning_content"):
		return &Template{Family: Qwen3}, nil
	case strings.Contains(source, qwen25DefaultSystem):
		return &Template{Family: ChatML, DefaultSystem: qwen25DefaultSystem}, nil
	}
	return &Template{Family: ChatML}, nil
}

// Load reads the chat_template of a tokenizer_config.json.
func Load(tokenizerConfig string) (*Template, error) {
	data, err := safefile.Read(tokenizerConfig, 16<<20)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("chat template: %s: %w", tokenizerConfig, err)
	}
	var source string
	if err := json.Unmarshal(cfg.ChatTemplate, &source); err != nil {
		return nil, fmt.Errorf("chat template: %s: chat_template is not one string (named templates are not supported)", tokenizerConfig)
	}
	t, err := Parse(source)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tokenizerConfig, err)
	}
	return t, nil
}

// Render turns messages into prompt text; with addGenerationPrompt it ends with the opening of
// an assistant turn, ready for sampling.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	if len(msgs) == 0 {
		return "", errors.New("chat: no messages")
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return "", fmt.Errorf("chat: message %d has role %q (want system, user or assistant)", i, m.Role)
		}
	}
	var b strings.Builder
	if t.DefaultSystem != "" && msgs[0].Role != "system" {
		turn(&b, "system", t.DefaultSystem)
	}
	lastQuery := len(msgs) - 1
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			lastQuery = i
			break
		}
	}
	for i, m := range msgs {
		if m.Role != "assistant" || t.Family != Qwen3 {
			turn(&b, m.Role, m.Content)
			continue
		}
		reasoning, content := splitThink(m.Content)
		b.WriteString("<|im_start|>assistant\n")
		if i > lastQuery && (i == len(msgs)-1 || reasoning != "") {
			b.WriteString("<think>\n" + strings.Trim(reasoning, "\n") + "\n</think>\n\n" + strings.TrimLeft(content, "\n"))
		} else {
			b.WriteString(content)
		}
		b.WriteString("<|im_end|>\n")
	}
	if addGenerationPrompt {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String(), nil
}

func turn(b *strings.Builder, role, content string) {
	b.WriteString("<|im_start|>" + role + "\n" + content + "<|im_end|>\n")
}

// splitThink separates an assistant message into reasoning and answer as Qwen3's template does:
// the answer is what follows the last </think> (leading newlines dropped), the reasoning what lies
// between the last <think> and the first </think>.
func splitThink(s string) (reasoning, content string) {
	if !strings.Contains(s, "</think>") {
		return "", s
	}
	parts := strings.Split(s, "</think>")
	content = strings.TrimLeft(parts[len(parts)-1], "\n")
	before := strings.TrimRight(parts[0], "\n")
	if i := strings.LastIndex(before, "<think>"); i >= 0 {
		before = before[i+len("<think>"):]
	}
	return strings.TrimLeft(before, "\n"), content
}
