// Package gen is the contract between spa's HTTP API and a generation engine, as vLLM's
// EngineClient is between its OpenAI server and its engine: requests and the events they produce,
// the versions a server holds, its counters, and the errors the API maps to status codes. It has
// no libtorch, so the API's behaviour is tested against a fake (inference/api) and the engine
// (inference) is tested without HTTP.
package gen

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/spa-rl/spa/model/sample"
)

// Generator is what the HTTP API needs of an engine. Implementations are safe for concurrent use.
type Generator interface {
	// Name is the served name, which always means the latest version.
	Name() string
	// MaxModelLen bounds prompt plus completion, in tokens.
	MaxModelLen() int
	// QueueRoom is how many more sequences may queue before Submit fails with ErrQueueFull.
	QueueRoom() int
	// Submit queues one sequence. Events arrive on the channel until one has FinishReason set,
	// then it closes; cancelling ctx aborts the sequence at the next token boundary.
	Submit(ctx context.Context, req Request) (<-chan Event, error)
	// Versions lists the loaded versions, oldest first.
	Versions() []VersionInfo
	// CheckVersion reports a name or number LoadVersion would refuse (ErrBadVersion), before
	// anything is read from disk.
	CheckVersion(name string, number int64) error
	// LoadVersion loads the checkpoint in dir as version name and makes it the latest, while
	// serving. Loading the same dir under the same name and number again is a no-op.
	LoadVersion(ctx context.Context, name string, number int64, dir string) error
	// Pause stops scheduling (requests queue); Resume continues.
	Pause()
	Resume()
	// Stats is a snapshot of the counters /metrics reports.
	Stats() Stats
}

// Request is one sequence to generate. The HTTP layer turns n > 1 into n requests.
type Request struct {
	// Model names a version, or the served name (or "") for the latest.
	Model    string
	Prompt   []int
	Sampling sample.Params
	Seed     uint64
	// MaxTokens bounds the completion; zero means up to MaxModelLen.
	MaxTokens int
	// StopTokenIDs end the sequence when sampled (the token is part of the output).
	StopTokenIDs []int
	// TopLogprobs asks for the n most likely alternatives at each position.
	TopLogprobs int
	// CacheSalt isolates prefix-cache entries: only requests with the same salt share them.
	CacheSalt string
}

// Token is one generated token with its log-probability under the sampling distribution, and the
// TopLogprobs most likely alternatives when asked.
type Token struct {
	ID      int
	Logprob float64
	TopIDs  []int
	TopLPs  []float64
}

// Finish reasons, as the OpenAI API names them.
const (
	FinishStop   = "stop"
	FinishLength = "length"
	FinishAbort  = "abort"
)

// Event is what a request's channel carries: tokens, then a last event with FinishReason set.
type Event struct {
	Token        *Token
	FinishReason string
	// StopToken is the stop token id that ended the sequence, or -1.
	StopToken int
	// Version is the version that generated the sequence.
	Version string
	Err     error
}

// VersionInfo describes a loaded version.
type VersionInfo struct {
	Name     string    `json:"name"`
	Number   int64     `json:"number"`
	Dir      string    `json:"dir"`
	Loaded   time.Time `json:"loaded"`
	Latest   bool      `json:"latest"`
	Running  int       `json:"running"`
	Waiting  int       `json:"waiting"`
	Slots    int       `json:"slots"`
	Draining bool      `json:"draining"`
}

// Stats are an engine's counters since it started (gauges where named so).
type Stats struct {
	// Requests counts sequences submitted, Aborted those that ended with FinishAbort.
	Requests, Aborted int64
	// Waiting and Running are gauges: sequences queued for a slot, and being decoded.
	Waiting, Running int64
	// PromptTokens counts prompt tokens computed (prefill), GeneratedTokens tokens sampled.
	PromptTokens, GeneratedTokens int64
	// PrefixLookups counts prefills that looked for a cached prefix, PrefixHits those that found
	// one, and ReusedTokens the prompt tokens taken from the cache instead of computed.
	PrefixLookups, PrefixHits, ReusedTokens int64
	// FirstTokens counts sequences that produced a first token, FirstTokenTime the sum of their
	// times from submission to it.
	FirstTokens    int64
	FirstTokenTime time.Duration
}

// Errors a Generator returns, which the API maps to OpenAI's error shapes.
var (
	ErrUnknownModel  = errors.New("unknown model")
	ErrPromptTooLong = errors.New("prompt too long")
	ErrClosed        = errors.New("engine closed")
	ErrQueueFull     = errors.New("queue full")
	// ErrBadVersion marks a version name or number LoadVersion refuses.
	ErrBadVersion = errors.New("bad version")
	// ErrIncompatible marks a checkpoint that cannot be served beside the loaded ones.
	ErrIncompatible = errors.New("incompatible checkpoint")
)

// versionName is what a version may be called: it appears in URLs, metrics labels and logs.
var versionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,127}$`)

// CheckVersion is the rule every generator applies to a version it is asked to load: names are
// 1-128 letters, digits and ._:@+/- ("/" as in Hugging Face names), starting with a letter or
// digit, and not the served name, which always means the latest; numbers are not negative.
func CheckVersion(served, name string, number int64) error {
	switch {
	case !versionName.MatchString(name):
		return fmt.Errorf("%w: name %q must be 1-128 letters, digits or ._:@+/- starting with a letter or digit", ErrBadVersion, name)
	case name == served:
		return fmt.Errorf("%w: %q is the served name, which always means the latest version; give the version its own name", ErrBadVersion, name)
	case number < 0:
		return fmt.Errorf("%w: number %d is negative", ErrBadVersion, number)
	}
	return nil
}

// CheckRequest applies the checks every generator makes before it queues a request: a prompt, a
// valid sampling, and room within maxModelLen for at least one generated token. It returns the
// request with MaxTokens filled in (zero means all the room left).
func CheckRequest(req Request, maxModelLen int) (Request, error) {
	if len(req.Prompt) == 0 {
		return req, errors.New("empty prompt")
	}
	if err := req.Sampling.Check(); err != nil {
		return req, err
	}
	if len(req.Prompt) >= maxModelLen {
		return req, fmt.Errorf("%w: %d prompt tokens; the limit (max_model_len) is %d including at least one generated token", ErrPromptTooLong, len(req.Prompt), maxModelLen)
	}
	room := maxModelLen - len(req.Prompt)
	switch {
	case req.MaxTokens > room:
		return req, fmt.Errorf("%w: %d prompt tokens + max_tokens %d exceed max_model_len %d", ErrPromptTooLong, len(req.Prompt), req.MaxTokens, maxModelLen)
	case req.MaxTokens <= 0:
		req.MaxTokens = room
	}
	return req, nil
}

// CheckPromptIDs refuses token ids outside a vocabulary of vocab ids.
func CheckPromptIDs(prompt []int, vocab int) error {
	for _, id := range prompt {
		if id < 0 || id >= vocab {
			return fmt.Errorf("prompt token id %d is outside the vocabulary (0..%d)", id, vocab-1)
		}
	}
	return nil
}
