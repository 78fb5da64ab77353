package gen

import (
	"errors"
	"strings"
	"testing"

	"github.com/spa-rl/spa/model/sample"
)

func TestCheckVersion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		number int64
		bad    string // part of the error; empty when accepted
	}{
		{"spa-v3", 3, ""},
		{"Qwen/Qwen2.5-0.5B@lora:1+x", 0, ""},
		{strings.Repeat("a", 128), 1, ""},
		{strings.Repeat("a", 129), 1, "must be 1-128"},
		{"", 1, "must be 1-128"},
		{"-v1", 1, "starting with a letter or digit"},
		{"spa v1", 1, "must be 1-128"},
		{"../etc", 1, "must be 1-128"},
		{"spa", 1, "the served name"},
		{"spa-v1", -1, "negative"},
	} {
		err := CheckVersion("spa", tc.name, tc.number)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q %d: %v", tc.name, tc.number, err)
		case tc.bad != "" && (err == nil || !errors.Is(err, ErrBadVersion) || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q %d: got %v, want ErrBadVersion saying %q", tc.name, tc.number, err, tc.bad)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	ok := sample.Params{Temperature: 1, TopP: 1}
	for _, tc := range []struct {
		prompt, maxTokens int
		sampling          sample.Params
		bad               string // part of the error; empty when accepted
		filled            int    // MaxTokens afterwards
	}{
		{10, 0, ok, "", 22},
		{10, 5, ok, "", 5},
		{10, 22, ok, "", 22},
		{10, 23, ok, "exceed max_model_len 32", 0},
		{32, 0, ok, "including at least one generated token", 0},
		{0, 1, ok, "empty prompt", 0},
		{10, 1, sample.Params{Temperature: -1, TopP: 1}, "temperature", 0},
	} {
		req, err := CheckRequest(Request{Prompt: make([]int, tc.prompt), MaxTokens: tc.maxTokens, Sampling: tc.sampling}, 32)
		switch {
		case tc.bad == "" && (err != nil || req.MaxTokens != tc.filled):
			t.Errorf("%d+%d: %v, max_tokens %d", tc.prompt, tc.maxTokens, err, req.MaxTokens)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%d+%d: %v, want %q", tc.prompt, tc.maxTokens, err, tc.bad)
		}
	}
	if err := CheckPromptIDs([]int{0, 9}, 10); err != nil {
		t.Error(err)
	}
	if err := CheckPromptIDs([]int{10}, 10); err == nil || !strings.Contains(err.Error(), "outside the vocabulary (0..9)") {
		t.Errorf("id 10 of 10: %v", err)
	}
}
