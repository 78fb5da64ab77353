package inference

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spa-rl/spa/inference/wire"
)

// LoadResult is the outcome of a closed-loop load: concurrency clients each sending streaming
// requests back to back.
type LoadResult struct {
	Concurrency  int     `json:"concurrency"`
	Requests     int     `json:"requests"`
	Tokens       int     `json:"tokens"`
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	TTFTp50ms    float64 `json:"ttft_p50_ms"`
	TTFTp99ms    float64 `json:"ttft_p99_ms"`
	Failed       int     `json:"failed"`
	// PromptTokens is the prompt's length.
	PromptTokens int `json:"prompt_tokens"`
	// DecodeTokensPerSec is the rate after the first token, prefill excluded: each request's
	// tokens after its first over the time from its first token to its last, times concurrency.
	DecodeTokensPerSec float64 `json:"decode_tokens_per_sec"`
}

// Load runs concurrency clients against baseURL (…/v1) for about d, each sending a streaming
// completion of prompt (token ids) with maxTokens greedy tokens and ignore_eos, and measures output
// tokens/s and time to first token.
func Load(ctx context.Context, baseURL, apiKey string, concurrency int, prompt []int, maxTokens int, d time.Duration) LoadResult {
	var mu sync.Mutex
	res := LoadResult{Concurrency: concurrency, PromptTokens: len(prompt)}
	var ttfts []time.Duration
	var decodeTokens int
	var decodeTime time.Duration
	body, _ := json.Marshal(map[string]any{"model": "spa", "prompt": prompt, "max_tokens": maxTokens, "temperature": 0,
		"ignore_eos": true, "stream": true, "return_token_ids": true})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d && ctx.Err() == nil {
				t0 := time.Now()
				tokens, first, last, err := streamTokens(ctx, client, baseURL+"/completions", apiKey, body)
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Failed++
				} else {
					res.Tokens += tokens
					ttfts = append(ttfts, first.Sub(t0))
					decodeTokens += tokens - 1
					decodeTime += last.Sub(first)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.TokensPerSec = float64(res.Tokens) / res.Seconds
	if decodeTime > 0 {
		res.DecodeTokensPerSec = float64(concurrency) * float64(decodeTokens) / decodeTime.Seconds()
	}
	if len(ttfts) > 0 {
		slices.Sort(ttfts)
		q := func(p float64) float64 { return float64(ttfts[int(p*float64(len(ttfts)-1))].Microseconds()) / 1e3 }
		res.TTFTp50ms, res.TTFTp99ms = q(0.5), q(0.99)
	}
	return res
}

// streamTokens sends one streaming request, counts the token ids it streams back, and says when
// the first and the last arrived.
func streamTokens(ctx context.Context, client *http.Client, url, apiKey string, body []byte) (n int, first, last time.Time, err error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, first, last, err
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, first, last, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, first, last, fmt.Errorf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") || line == "data: [DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				TokenIDs []int `json:"token_ids"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(line[6:]), &chunk) != nil {
			continue
		}
		for _, c := range chunk.Choices {
			if len(c.TokenIDs) > 0 {
				last = time.Now()
				if first.IsZero() {
					first = last
				}
			}
			n += len(c.TokenIDs)
		}
	}
	if first.IsZero() {
		return 0, first, last, fmt.Errorf("no tokens")
	}
	return n, first, last, sc.Err()
}

// MultiTurnResult is a conversation workload's outcome.
type MultiTurnResult struct {
	Episodes     int     `json:"episodes"`
	Turns        int     `json:"turns"`
	Seconds      float64 `json:"seconds"`
	PromptTokens int     `json:"prompt_tokens"`
	// OutputTokens are the replies' tokens; LastPromptTokens the longest prompt of the last turn.
	OutputTokens     int     `json:"output_tokens"`
	LastPromptTokens int     `json:"last_prompt_tokens"`
	TokensPerSec     float64 `json:"tokens_per_sec"`
}

// MultiTurn plays episodes concurrent conversations of turns turns against baseURL: each turn
// re-sends the whole history (as agents do) plus newTokens fresh tokens, and appends the reply.
func MultiTurn(ctx context.Context, baseURL string, episodes, turns, newTokens, replyTokens int) (MultiTurnResult, error) {
	res := MultiTurnResult{Episodes: episodes, Turns: turns}
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	var wg sync.WaitGroup
	for ep := range episodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var history []int
			for turn := range turns {
				for i := range newTokens {
					history = append(history, 3+(ep*97+turn*31+i*7)%200)
				}
				body, _ := json.Marshal(map[string]any{"model": "spa", "prompt": history, "max_tokens": replyTokens, "temperature": 0,
					"ignore_eos": true, "return_token_ids": true, "cache_salt": fmt.Sprintf("episode-%d", ep)})
				resp, err := http.Post(baseURL+"/completions", "application/json", bytes.NewReader(body))
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				var out wire.CompletionResponse
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %s", resp.Status)
				} else if err = json.NewDecoder(resp.Body).Decode(&out); err == nil && len(out.Choices) != 1 {
					err = fmt.Errorf("%d choices", len(out.Choices))
				}
				resp.Body.Close()
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("turn %d of %d prompt tokens: %w", turn, len(history), err)
					mu.Unlock()
					return
				}
				mu.Lock()
				res.PromptTokens += len(history)
				res.OutputTokens += len(out.Choices[0].TokenIDs)
				res.LastPromptTokens = max(res.LastPromptTokens, len(history))
				mu.Unlock()
				history = append(history, out.Choices[0].TokenIDs...)
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.TokensPerSec = float64(res.OutputTokens) / res.Seconds
	return res, firstErr
}

// PrefixStats reads the engine's prefix-cache counters: reused and computed prompt tokens.
func (e *Engine) PrefixStats() (reused, computed int64) {
	return e.stats.reused.Load(), e.stats.prompts.Load()
}

// Generated is the number of tokens generated so far.
func (e *Engine) Generated() int64 { return e.stats.generated.Load() }
