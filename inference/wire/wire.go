// Package wire is the OpenAI API as vLLM serves it, on the wire: request shapes with the checks of
// every field, response and error shapes, and writing JSON that cannot fail silently. It needs no
// libtorch, so the request decoder is fuzzed on its own (FuzzRequest).
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"

	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/sample"
)

// Error is an OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    any    `json:"code"`
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// BadRequest is a 400 naming the offending field in param.
func BadRequest(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Type: "BadRequestError", Param: param, Code: http.StatusBadRequest}
}

// WriteError writes err as an OpenAI-shaped error; an error that is not an *Error is a 500.
func WriteError(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ae = &Error{Status: http.StatusInternalServerError, Message: err.Error(), Type: "InternalServerError", Code: http.StatusInternalServerError}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": ae})
}

// SamplingFields are the request fields the completions and chat endpoints share, including
// vLLM's extensions that RL harnesses rely on.
type SamplingFields struct {
	Model               string          `json:"model"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	TopK                *int            `json:"top_k"`
	N                   *int            `json:"n"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	StopTokenIDs        []int           `json:"stop_token_ids"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	ReturnTokenIDs         bool   `json:"return_token_ids"`
	ReturnTokensAsTokenIDs bool   `json:"return_tokens_as_token_ids"`
	IncludeStopStrInOutput bool   `json:"include_stop_str_in_output"`
	SkipSpecialTokens      *bool  `json:"skip_special_tokens"`
	IgnoreEOS              bool   `json:"ignore_eos"`
	CacheSalt              string `json:"cache_salt"`
}

// CompletionRequest is the body of POST /v1/completions.
type CompletionRequest struct {
	SamplingFields
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     bool            `json:"echo"`
}

// ChatRequest is the body of POST /v1/chat/completions.
type ChatRequest struct {
	SamplingFields
	Messages            []chat.Message `json:"messages"`
	Logprobs            bool           `json:"logprobs"`
	TopLogprobs         *int           `json:"top_logprobs"`
	AddGenerationPrompt *bool          `json:"add_generation_prompt"`
}

// Params are the checked sampling settings of one request.
type Params struct {
	Sampling     sample.Params
	MaxTokens    int
	N            int
	Seed         *uint64
	Stops        []string
	StopTokenIDs []int
	SkipSpecial  bool
	IgnoreEOS    bool
	IncludeStop  bool
	AsTokenIDs   bool
	ReturnIDs    bool
	CacheSalt    string
}

// MaxN bounds n, the completions per prompt.
const MaxN = 64

// Check validates the sampling fields and returns them as Params, or a 400 naming the field.
func (f *SamplingFields) Check() (Params, error) {
	p := Params{Sampling: sample.Params{Temperature: 1, TopP: 1, TopK: -1}, N: 1, SkipSpecial: true, StopTokenIDs: f.StopTokenIDs,
		IgnoreEOS: f.IgnoreEOS, IncludeStop: f.IncludeStopStrInOutput, AsTokenIDs: f.ReturnTokensAsTokenIDs, ReturnIDs: f.ReturnTokenIDs,
		CacheSalt: f.CacheSalt}
	if f.Temperature != nil {
		p.Sampling.Temperature = *f.Temperature
	}
	if f.TopP != nil {
		p.Sampling.TopP = *f.TopP
	}
	if f.TopK != nil {
		p.Sampling.TopK = *f.TopK
	}
	switch {
	case p.Sampling.Temperature < 0 || p.Sampling.Temperature > 100 || math.IsNaN(p.Sampling.Temperature):
		return p, BadRequest("temperature", "temperature must be in [0, 100], got %v", p.Sampling.Temperature)
	case p.Sampling.TopP <= 0 || p.Sampling.TopP > 1:
		return p, BadRequest("top_p", "top_p must be in (0, 1], got %v", p.Sampling.TopP)
	case p.Sampling.TopK < -1:
		return p, BadRequest("top_k", "top_k must be -1 or 0 (disabled) or positive, got %d", p.Sampling.TopK)
	}
	max := f.MaxTokens
	if f.MaxCompletionTokens != nil {
		max = f.MaxCompletionTokens
	}
	if max != nil {
		if *max < 1 {
			return p, BadRequest("max_tokens", "max_tokens must be at least 1, got %d", *max)
		}
		p.MaxTokens = *max
	}
	if f.N != nil {
		if *f.N < 1 || *f.N > MaxN {
			return p, BadRequest("n", "n must be in [1, %d], got %d", MaxN, *f.N)
		}
		p.N = *f.N
	}
	if f.Seed != nil {
		s := uint64(*f.Seed)
		p.Seed = &s
	}
	if f.SkipSpecialTokens != nil {
		p.SkipSpecial = *f.SkipSpecialTokens
	}
	if len(f.Stop) > 0 && string(f.Stop) != "null" {
		var one string
		if json.Unmarshal(f.Stop, &one) == nil {
			p.Stops = []string{one}
		} else if err := json.Unmarshal(f.Stop, &p.Stops); err != nil {
			return p, BadRequest("stop", "stop must be a string or a list of strings")
		}
		for _, s := range p.Stops {
			if s == "" {
				return p, BadRequest("stop", "stop strings must not be empty")
			}
		}
	}
	for _, id := range f.StopTokenIDs {
		if id < 0 {
			return p, BadRequest("stop_token_ids", "stop_token_ids must be token ids, got %d", id)
		}
	}
	return p, nil
}

// ParsePrompts reads the completions prompt: a string, a list of strings, a list of token ids,
// or a list of lists of token ids. Text is encoded only after the number of prompts is checked
// against maxPrompts; text that encodes to no tokens is refused.
func ParsePrompts(raw json.RawMessage, encode func(string) ([]int, error), maxPrompts int) ([][]int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, BadRequest("prompt", "prompt is required")
	}
	tooMany := func(n int) error {
		return BadRequest("prompt", "%d prompts in one request; the limit (server.max_request_seqs) is %d", n, maxPrompts)
	}
	encodeOne := func(i int, s string) ([]int, error) {
		ids, err := encode(s)
		if err == nil && len(ids) == 0 {
			err = BadRequest("prompt", "prompt %d is empty text", i)
		}
		return ids, err
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		ids, err := encodeOne(0, s)
		if err != nil {
			return nil, err
		}
		return [][]int{ids}, nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		if len(ids) == 0 {
			return nil, BadRequest("prompt", "prompt is an empty list")
		}
		return [][]int{ids}, nil
	}
	var strs []string
	if json.Unmarshal(raw, &strs) == nil {
		if len(strs) == 0 {
			return nil, BadRequest("prompt", "prompt is an empty list")
		}
		if len(strs) > maxPrompts {
			return nil, tooMany(len(strs))
		}
		out := make([][]int, len(strs))
		for i, s := range strs {
			ids, err := encodeOne(i, s)
			if err != nil {
				return nil, err
			}
			out[i] = ids
		}
		return out, nil
	}
	var lists [][]int
	if err := json.Unmarshal(raw, &lists); err == nil && len(lists) > 0 {
		if len(lists) > maxPrompts {
			return nil, tooMany(len(lists))
		}
		for i, l := range lists {
			if len(l) == 0 {
				return nil, BadRequest("prompt", "prompt %d is an empty list of token ids", i)
			}
		}
		return lists, nil
	}
	return nil, BadRequest("prompt", "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids")
}

// WriteJSON encodes v whole before writing, so that a value JSON cannot hold (NaN, infinity)
// becomes a 500 with an error body rather than an empty 200.
func WriteJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		WriteError(w, EncodeError(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

// EncodeError is the 500 for a response that could not be encoded.
func EncodeError(err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Message: "encoding the response: " + err.Error(), Type: "InternalServerError", Code: http.StatusInternalServerError}
}

// Response shapes.

// Usage counts a response's tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// CompletionLogprobs is a completion choice's logprobs (the legacy completions shape).
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// CompletionChoice is one choice of a completions response or chunk.
type CompletionChoice struct {
	Index          int                 `json:"index"`
	Text           string              `json:"text"`
	Logprobs       *CompletionLogprobs `json:"logprobs"`
	FinishReason   *string             `json:"finish_reason"`
	StopReason     any                 `json:"stop_reason"`
	TokenIDs       []int               `json:"token_ids,omitempty"`
	PromptTokenIDs []int               `json:"prompt_token_ids,omitempty"`
}

// CompletionResponse is a completions response, or one chunk of a stream.
type CompletionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []CompletionChoice `json:"choices"`
	Usage   *Usage             `json:"usage,omitempty"`
}

// ChatTopLogprob is one token's logprob in the chat shape.
type ChatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// ChatLogprob is a sampled token's logprob with its alternatives.
type ChatLogprob struct {
	ChatTopLogprob
	TopLogprobs []ChatTopLogprob `json:"top_logprobs"`
}

// ChatMessage is a chat response's message or a stream chunk's delta.
type ChatMessage struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

// ChatChoice is one choice of a chat response or chunk.
type ChatChoice struct {
	Index    int          `json:"index"`
	Message  *ChatMessage `json:"message,omitempty"`
	Delta    *ChatMessage `json:"delta,omitempty"`
	Logprobs *struct {
		Content []ChatLogprob `json:"content"`
	} `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
	StopReason   any     `json:"stop_reason"`
	TokenIDs     []int   `json:"token_ids,omitempty"`
}

// ChatResponse is a chat completions response, or one chunk of a stream.
type ChatResponse struct {
	ID             string       `json:"id"`
	Object         string       `json:"object"`
	Created        int64        `json:"created"`
	Model          string       `json:"model"`
	Choices        []ChatChoice `json:"choices"`
	Usage          *Usage       `json:"usage,omitempty"`
	PromptTokenIDs []int        `json:"prompt_token_ids,omitempty"`
}
