package inference

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"

	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/sample"
)

// apiError is an OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    any    `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Type: "BadRequestError", Param: param, Code: http.StatusBadRequest}
}

func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{Status: http.StatusInternalServerError, Message: err.Error(), Type: "InternalServerError", Code: http.StatusInternalServerError}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": ae})
}

// samplingFields are the request fields the completions and chat endpoints share, including
// vLLM's extensions that RL harnesses rely on.
type samplingFields struct {
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

type completionRequest struct {
	samplingFields
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     bool            `json:"echo"`
}

type chatRequest struct {
	samplingFields
	Messages            []chat.Message `json:"messages"`
	Logprobs            bool           `json:"logprobs"`
	TopLogprobs         *int           `json:"top_logprobs"`
	AddGenerationPrompt *bool          `json:"add_generation_prompt"`
}

// params are the checked sampling settings of one request.
type params struct {
	sampling     sample.Params
	maxTokens    int
	n            int
	seed         *uint64
	stops        []string
	stopTokenIDs []int
	skipSpecial  bool
	ignoreEOS    bool
	includeStop  bool
	asTokenIDs   bool
	returnIDs    bool
	cacheSalt    string
}

const maxN = 64

func (f *samplingFields) check() (params, error) {
	p := params{sampling: sample.Params{Temperature: 1, TopP: 1, TopK: -1}, n: 1, skipSpecial: true, stopTokenIDs: f.StopTokenIDs,
		ignoreEOS: f.IgnoreEOS, includeStop: f.IncludeStopStrInOutput, asTokenIDs: f.ReturnTokensAsTokenIDs, returnIDs: f.ReturnTokenIDs,
		cacheSalt: f.CacheSalt}
	if f.Temperature != nil {
		p.sampling.Temperature = *f.Temperature
	}
	if f.TopP != nil {
		p.sampling.TopP = *f.TopP
	}
	if f.TopK != nil {
		p.sampling.TopK = *f.TopK
	}
	switch {
	case p.sampling.Temperature < 0 || p.sampling.Temperature > 100 || math.IsNaN(p.sampling.Temperature):
		return p, badRequest("temperature", "temperature must be in [0, 100], got %v", p.sampling.Temperature)
	case p.sampling.TopP <= 0 || p.sampling.TopP > 1:
		return p, badRequest("top_p", "top_p must be in (0, 1], got %v", p.sampling.TopP)
	case p.sampling.TopK < -1:
		return p, badRequest("top_k", "top_k must be -1 or 0 (disabled) or positive, got %d", p.sampling.TopK)
	}
	max := f.MaxTokens
	if f.MaxCompletionTokens != nil {
		max = f.MaxCompletionTokens
	}
	if max != nil {
		if *max < 1 {
			return p, badRequest("max_tokens", "max_tokens must be at least 1, got %d", *max)
		}
		p.maxTokens = *max
	}
	if f.N != nil {
		if *f.N < 1 || *f.N > maxN {
			return p, badRequest("n", "n must be in [1, %d], got %d", maxN, *f.N)
		}
		p.n = *f.N
	}
	if f.Seed != nil {
		s := uint64(*f.Seed)
		p.seed = &s
	}
	if f.SkipSpecialTokens != nil {
		p.skipSpecial = *f.SkipSpecialTokens
	}
	if len(f.Stop) > 0 && string(f.Stop) != "null" {
		var one string
		if json.Unmarshal(f.Stop, &one) == nil {
			p.stops = []string{one}
		} else if err := json.Unmarshal(f.Stop, &p.stops); err != nil {
			return p, badRequest("stop", "stop must be a string or a list of strings")
		}
		for _, s := range p.stops {
			if s == "" {
				return p, badRequest("stop", "stop strings must not be empty")
			}
		}
	}
	for _, id := range f.StopTokenIDs {
		if id < 0 {
			return p, badRequest("stop_token_ids", "stop_token_ids must be token ids, got %d", id)
		}
	}
	return p, nil
}

// parsePrompts reads the completions prompt: a string, a list of strings, a list of token ids, or a
// list of lists of token ids.
func parsePrompts(raw json.RawMessage, encode func(string) []int) ([][]int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt", "prompt is required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return [][]int{encode(s)}, nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		if len(ids) == 0 {
			return nil, badRequest("prompt", "prompt is an empty list")
		}
		return [][]int{ids}, nil
	}
	var strs []string
	if json.Unmarshal(raw, &strs) == nil {
		if len(strs) == 0 {
			return nil, badRequest("prompt", "prompt is an empty list")
		}
		out := make([][]int, len(strs))
		for i, s := range strs {
			out[i] = encode(s)
		}
		return out, nil
	}
	var lists [][]int
	if err := json.Unmarshal(raw, &lists); err == nil && len(lists) > 0 {
		for i, l := range lists {
			if len(l) == 0 {
				return nil, badRequest("prompt", "prompt %d is an empty list of token ids", i)
			}
		}
		return lists, nil
	}
	return nil, badRequest("prompt", "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids")
}

// Response shapes.

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type completionChoice struct {
	Index          int                 `json:"index"`
	Text           string              `json:"text"`
	Logprobs       *completionLogprobs `json:"logprobs"`
	FinishReason   *string             `json:"finish_reason"`
	StopReason     any                 `json:"stop_reason"`
	TokenIDs       []int               `json:"token_ids,omitempty"`
	PromptTokenIDs []int               `json:"prompt_token_ids,omitempty"`
}

type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type chatLogprob struct {
	chatTopLogprob
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatMessage struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

type chatChoice struct {
	Index    int          `json:"index"`
	Message  *chatMessage `json:"message,omitempty"`
	Delta    *chatMessage `json:"delta,omitempty"`
	Logprobs *struct {
		Content []chatLogprob `json:"content"`
	} `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
	StopReason   any     `json:"stop_reason"`
	TokenIDs     []int   `json:"token_ids,omitempty"`
}

type chatResponse struct {
	ID             string       `json:"id"`
	Object         string       `json:"object"`
	Created        int64        `json:"created"`
	Model          string       `json:"model"`
	Choices        []chatChoice `json:"choices"`
	Usage          *usage       `json:"usage,omitempty"`
	PromptTokenIDs []int        `json:"prompt_token_ids,omitempty"`
}
