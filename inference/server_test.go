package inference

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/inference/wire"
	"github.com/spa-rl/spa/internal/testhttp"
)

// servedCheckpoint writes a random tiny model with the domain tokenizer (vocabulary 320).
func servedCheckpoint(t *testing.T, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	initCheckpoint(t, dir, seed, 0)
	return dir
}

// startServer serves a random tiny checkpoint on the real engine, end to end over HTTP; the API's
// behaviour on its own is tested in inference/api against a fake generator.
func startServer(t *testing.T, sopts api.Options) (*Server, *httptest.Server) {
	t.Helper()
	s, err := Open(context.Background(), servedCheckpoint(t, 3), Options{Name: "spa", MaxBatch: 8, MaxModelLen: 192, KVCacheMB: 64}, sopts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	return s, hs
}

func TestTokenIDPromptsAndVLLMExtras(t *testing.T) {
	_, hs := startServer(t, api.Options{})
	var resp wire.CompletionResponse
	body := `{"model":"spa","prompt":[[5,6,7,8],[9,10]],"max_tokens":6,"temperature":0,"return_token_ids":true,"logprobs":0,"return_tokens_as_token_ids":true}`
	if code := testhttp.Post(t, hs.URL+"/v1/completions", body, &resp); code != 200 {
		t.Fatalf("status %d", code)
	}
	if len(resp.Choices) != 2 {
		t.Fatalf("%d choices", len(resp.Choices))
	}
	for i, ch := range resp.Choices {
		want := [][]int{{5, 6, 7, 8}, {9, 10}}[i]
		if len(ch.PromptTokenIDs) != len(want) || ch.PromptTokenIDs[0] != want[0] {
			t.Errorf("choice %d prompt_token_ids %v", i, ch.PromptTokenIDs)
		}
		if len(ch.TokenIDs) == 0 || len(ch.TokenIDs) != len(ch.Logprobs.TokenLogprobs) || !strings.HasPrefix(ch.Logprobs.Tokens[0], "token_id:") {
			t.Errorf("choice %d: token_ids %v, logprobs %+v", i, ch.TokenIDs, ch.Logprobs)
		}
	}
	// Greedy is deterministic across requests.
	var again wire.CompletionResponse
	testhttp.Post(t, hs.URL+"/v1/completions", body, &again)
	for i := range resp.Choices {
		if a, b := resp.Choices[i].TokenIDs, again.Choices[i].TokenIDs; fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("greedy choice %d differs: %v vs %v", i, a, b)
		}
	}
	// Chat with return_token_ids gives the prompt ids at the top level.
	var cr wire.ChatResponse
	testhttp.Post(t, hs.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Turn 1:"}],"max_tokens":4,"return_token_ids":true,"logprobs":true,"top_logprobs":2}`, &cr)
	if len(cr.PromptTokenIDs) == 0 || len(cr.Choices[0].TokenIDs) == 0 || len(cr.Choices[0].Logprobs.Content[0].TopLogprobs) != 2 {
		t.Errorf("chat extras: %+v", cr)
	}
}

// TestWeightUpdateUnderLoad swaps weights while requests stream in: none fails, and requests after
// the update report the new version.
func TestWeightUpdateUnderLoad(t *testing.T) {
	s, hs := startServer(t, api.Options{})
	next := servedCheckpoint(t, 99)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures, total := 0, 0
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				var r wire.CompletionResponse
				code := testhttp.Post(t, hs.URL+"/v1/completions", `{"prompt":"Turn `+testhttp.JSON(w*100+i)+`:","max_tokens":8}`, &r)
				mu.Lock()
				total++
				if code != 200 || len(r.Choices) != 1 {
					failures++
				}
				mu.Unlock()
			}
		}()
	}
	var upd map[string]any
	if code := testhttp.Post(t, hs.URL+"/update_weights", `{"weight_dir":`+testhttp.JSON(next)+`,"version":1}`, &upd); code != 200 {
		t.Fatalf("update: %d %v", code, upd)
	}
	var after wire.CompletionResponse
	testhttp.Post(t, hs.URL+"/v1/completions", `{"prompt":"x","max_tokens":3}`, &after)
	cancel()
	wg.Wait()
	if failures != 0 || total < 6 {
		t.Errorf("%d of %d requests failed during the update", failures, total)
	}
	if after.Model != "spa-v1" {
		t.Errorf("after the update the response says model %q", after.Model)
	}
	// The old version is still addressable until evicted (max 2 versions).
	var old wire.CompletionResponse
	if code := testhttp.Post(t, hs.URL+"/v1/completions", `{"model":"spa-v0","prompt":"x","max_tokens":3}`, &old); code != 200 || old.Model != "spa-v0" {
		t.Errorf("old version: %d %q", code, old.Model)
	}
	names := []string{}
	for _, v := range s.Engine().Versions() {
		names = append(names, v.Name)
	}
	if len(names) != 2 {
		t.Errorf("versions %v", names)
	}
}

// TestLogprobsShareOneDistribution: away from temperature 1, a sampled token's logprob and its
// own entry among top_logprobs are the same number (they once came from different temperatures).
func TestLogprobsShareOneDistribution(t *testing.T) {
	_, hs := startServer(t, api.Options{})
	for _, temp := range []float64{0.4, 1, 2} {
		var r wire.CompletionResponse
		body := fmt.Sprintf(`{"prompt":[5,6,7],"max_tokens":12,"temperature":%v,"seed":3,"logprobs":20,"return_tokens_as_token_ids":true,"ignore_eos":true}`, temp)
		if code := testhttp.Post(t, hs.URL+"/v1/completions", body, &r); code != 200 {
			t.Fatalf("temperature %v: %d", temp, code)
		}
		lp := r.Choices[0].Logprobs
		compared := 0
		for i, tok := range lp.Tokens {
			if alt, ok := lp.TopLogprobs[i][tok]; ok {
				compared++
				if math.Abs(alt-lp.TokenLogprobs[i]) > 1e-9 {
					t.Errorf("temperature %v, position %d: token_logprob %v, its top_logprobs entry %v", temp, i, lp.TokenLogprobs[i], alt)
				}
			}
		}
		if compared == 0 {
			t.Errorf("temperature %v: no sampled token among its top 20", temp)
		}
	}
}
