package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/spa-rl/spa/model/chat"
)

// GenRequest asks for one assistant turn.
type GenRequest struct {
	Model string
	// PromptIDs is the whole token sequence so far (token mode); Messages the conversation
	// (chat mode).
	PromptIDs   []int
	Messages    []chat.Message
	MaxTokens   int
	Temperature float64
	TopP        float64
	// TopK samples from the k most likely tokens; 0 disables it.
	TopK int
	Seed *int64
}

// GenResponse is the sampled turn.
type GenResponse struct {
	Text string
	// TokenIDs and Logprobs are the sampled tokens and their logprobs (token mode only).
	TokenIDs []int
	Logprobs []float32
	// Model is the name the server answered with: the policy version that sampled the turn.
	Model        string
	FinishReason string
}

// LLM generates assistant turns. Client implements it over HTTP; tests and benchmarks use fakes.
type LLM interface {
	Generate(ctx context.Context, req GenRequest) (GenResponse, error)
}

// ClientOptions configure a Client.
type ClientOptions struct {
	// BaseURL ends in /v1 ("http://127.0.0.1:8000/v1"); a URL without it gets it appended.
	BaseURL string
	APIKey  string
	// Chat selects /v1/chat/completions (for API models that only offer chat); the default is
	// token mode on /v1/completions.
	Chat bool
	// Timeout bounds one request; zero means 5 minutes (a long generation on a busy server).
	Timeout time.Duration
	// Retries is how many times a 5xx or connection error is retried; zero means 4.
	Retries int
}

// Client is an LLM on go-openai. go-openai cannot send token-id prompts or vLLM's extra fields
// (temperature 0 is dropped by omitempty, top_k and return_token_ids do not exist) and drops
// vLLM's extra response fields, so requests pass through an HTTP doer that merges the extra body
// fields in and keeps the raw response for reading token_ids.
type Client struct {
	api     *openai.Client
	opts    ClientOptions
	baseURL string
}

type extrasKey struct{}

// exchange carries one request's extra fields in and its raw response out, through the context.
type exchange struct {
	extra map[string]any
	raw   []byte
}

// vllmDoer merges exchange.extra into the JSON body and records the raw response.
type vllmDoer struct{ http *http.Client }

func (d vllmDoer) Do(req *http.Request) (*http.Response, error) {
	ex, _ := req.Context().Value(extrasKey{}).(*exchange)
	if ex != nil && len(ex.extra) > 0 && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("merge request fields: %w", err)
		}
		for k, v := range ex.extra {
			m[k] = v
		}
		body, _ = json.Marshal(m)
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	resp, err := d.http.Do(req)
	if err != nil || ex == nil {
		return resp, err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	ex.raw = raw
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	return resp, nil
}

// NewClient makes a client for one endpoint.
func NewClient(opts ClientOptions) (*Client, error) {
	base := strings.TrimRight(strings.TrimSpace(opts.BaseURL), "/")
	if base == "" {
		return nil, errors.New("rollout client: no endpoint URL")
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("rollout client: endpoint %q is not an http(s) URL", opts.BaseURL)
	}
	if !strings.HasSuffix(base, "/v1") {
		base += "/v1"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Retries <= 0 {
		opts.Retries = 4
	}
	cfg := openai.DefaultConfig(opts.APIKey)
	cfg.BaseURL = base
	cfg.HTTPClient = vllmDoer{http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}}}
	return &Client{api: openai.NewClientWithConfig(cfg), opts: opts, baseURL: base}, nil
}

// BaseURL is the endpoint, ending in /v1.
func (c *Client) BaseURL() string { return c.baseURL }

// Generate sends one request, retrying 5xx answers and connection errors with backoff.
func (c *Client) Generate(ctx context.Context, req GenRequest) (GenResponse, error) {
	var last error
	for attempt := 0; attempt <= c.opts.Retries; attempt++ {
		if attempt > 0 {
			wait := time.Duration(1<<min(attempt-1, 6)) * 200 * time.Millisecond
			wait += time.Duration(rand.Int64N(int64(wait / 2)))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return GenResponse{}, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
		resp, err := c.once(rctx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		last = c.explain(err)
		if !retryable(err) || ctx.Err() != nil {
			return GenResponse{}, last
		}
	}
	return GenResponse{}, fmt.Errorf("%s: gave up after %d attempts: %w", c.baseURL, c.opts.Retries+1, last)
}

func retryable(err error) bool {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		return apiErr.HTTPStatusCode >= 500 || apiErr.HTTPStatusCode == 429
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		return reqErr.HTTPStatusCode >= 500 || reqErr.HTTPStatusCode == 429
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "connection reset")
}

// ErrUnauthorized marks a request the server refused for its API key. It is no episode's fault,
// so worker pools stop on it instead of failing every episode in turn.
var ErrUnauthorized = errors.New("unauthorized")

// explain turns the errors a wrong endpoint produces into messages that say what to check.
func (c *Client) explain(err error) error {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(err, &apiErr) && apiErr.HTTPStatusCode == 404 && strings.Contains(strings.ToLower(apiErr.Message), "model"):
		return fmt.Errorf("%s: the server does not serve this model: %s", c.baseURL, apiErr.Message)
	case errors.As(err, &apiErr) && apiErr.HTTPStatusCode == 404,
		errors.As(err, &reqErr) && reqErr.HTTPStatusCode == 404:
		return fmt.Errorf("%s: not found (404); is this an OpenAI-compatible base URL ending in /v1? %w", c.baseURL, err)
	case errors.As(err, &apiErr) && apiErr.HTTPStatusCode == 401,
		errors.As(err, &reqErr) && reqErr.HTTPStatusCode == 401:
		return fmt.Errorf("%s: %w (401; check the API key, OPENAI_API_KEY for spa's commands): %w", c.baseURL, ErrUnauthorized, err)
	case strings.Contains(err.Error(), "connection refused"):
		return fmt.Errorf("%s: no server is listening (connection refused): %w", c.baseURL, err)
	}
	return fmt.Errorf("%s: %w", c.baseURL, err)
}

func (c *Client) once(ctx context.Context, req GenRequest) (GenResponse, error) {
	ex := &exchange{extra: map[string]any{
		"temperature":         req.Temperature, // sent even when 0, which go-openai would drop
		"skip_special_tokens": false,
	}}
	if req.TopP > 0 {
		ex.extra["top_p"] = req.TopP
	}
	if req.TopK > 0 {
		ex.extra["top_k"] = req.TopK
	}
	if req.Seed != nil {
		ex.extra["seed"] = *req.Seed
	}
	ctx = context.WithValue(ctx, extrasKey{}, ex)
	if c.opts.Chat {
		msgs := make([]openai.ChatCompletionMessage, len(req.Messages))
		for i, m := range req.Messages {
			msgs[i] = openai.ChatCompletionMessage{Role: m.Role, Content: m.Content}
		}
		resp, err := c.api.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: req.Model, Messages: msgs, MaxTokens: req.MaxTokens})
		if err != nil {
			return GenResponse{}, err
		}
		if len(resp.Choices) == 0 {
			return GenResponse{}, errors.New("the server returned no choices")
		}
		return GenResponse{Text: resp.Choices[0].Message.Content, Model: resp.Model, FinishReason: string(resp.Choices[0].FinishReason)}, nil
	}
	ex.extra["prompt"] = req.PromptIDs
	ex.extra["return_token_ids"] = true
	ex.extra["logprobs"] = 0
	// go-openai checks the prompt's type before sending; the doer replaces this placeholder.
	if _, err := c.api.CreateCompletion(ctx, openai.CompletionRequest{Model: req.Model, Prompt: "", MaxTokens: req.MaxTokens}); err != nil {
		return GenResponse{}, err
	}
	var raw struct {
		Model   string `json:"model"`
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
			TokenIDs     []int  `json:"token_ids"`
			Logprobs     *struct {
				TokenLogprobs []float64 `json:"token_logprobs"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(ex.raw, &raw); err != nil {
		return GenResponse{}, fmt.Errorf("read completion: %w", err)
	}
	if len(raw.Choices) == 0 {
		return GenResponse{}, errors.New("the server returned no choices")
	}
	ch := raw.Choices[0]
	if ch.TokenIDs == nil {
		return GenResponse{}, errors.New("the server returned no token_ids; token mode needs a vLLM-compatible server (return_token_ids)")
	}
	out := GenResponse{Text: ch.Text, TokenIDs: ch.TokenIDs, Model: raw.Model, FinishReason: ch.FinishReason}
	if ch.Logprobs == nil || len(ch.Logprobs.TokenLogprobs) != len(ch.TokenIDs) {
		return GenResponse{}, fmt.Errorf("the server returned %d token ids but no matching logprobs", len(ch.TokenIDs))
	}
	out.Logprobs = make([]float32, len(ch.TokenIDs))
	for i, lp := range ch.Logprobs.TokenLogprobs {
		out.Logprobs[i] = float32(lp)
	}
	return out, nil
}
