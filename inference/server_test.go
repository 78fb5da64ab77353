package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/inference/wire"
)

// servedCheckpoint writes a random tiny model with the domain tokenizer (vocabulary 320).
func servedCheckpoint(t *testing.T, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	initCheckpoint(t, dir, seed, 0)
	return dir
}

func startServer(t *testing.T, sopts ServerOptions) (*Server, *httptest.Server) {
	t.Helper()
	s, err := Open(context.Background(), servedCheckpoint(t, 3), Options{Name: "spa", MaxBatch: 8, MaxModelLen: 192, KVCacheMB: 64}, sopts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	return s, hs
}

func client(hs *httptest.Server, key string) *openai.Client {
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = hs.URL + "/v1"
	return openai.NewClientWithConfig(cfg)
}

// post sends raw JSON (for vLLM's extra fields, which go-openai cannot send) and decodes the reply.
func post(t *testing.T, url, body string, out any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s: %v: %s", url, err, data)
		}
	}
	return resp.StatusCode
}

func TestOpenAIClientCompletionsAndChat(t *testing.T) {
	_, hs := startServer(t, ServerOptions{})
	c := client(hs, "")
	ctx := context.Background()

	models, err := c.ListModels(ctx)
	if err != nil || len(models.Models) != 2 || models.Models[0].ID != "spa-v0" || models.Models[1].ID != "spa" {
		t.Fatalf("models: %+v %v", models, err)
	}
	seed := 7
	cr, err := c.CreateCompletion(ctx, openai.CompletionRequest{Model: "spa", Prompt: "Turn 1:\nState:\n", MaxTokens: 12, N: 3, Seed: &seed, LogProbs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.Choices) != 3 || cr.Model != "spa-v0" || cr.Usage.CompletionTokens == 0 || cr.Usage.PromptTokens == 0 {
		t.Fatalf("completion: %+v", cr)
	}
	for _, ch := range cr.Choices {
		if len(ch.LogProbs.TokenLogprobs) == 0 || len(ch.LogProbs.TopLogprobs[0]) == 0 || ch.FinishReason == "" {
			t.Errorf("choice %d: %+v", ch.Index, ch)
		}
	}
	chat, err := c.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: "spa-v0", MaxTokens: 10,
		Messages: []openai.ChatCompletionMessage{{Role: "system", Content: "Solve it."}, {Role: "user", Content: "Turn 1:"}}})
	if err != nil || len(chat.Choices) != 1 || chat.Choices[0].Message.Role != "assistant" {
		t.Fatalf("chat: %+v %v", chat, err)
	}

	// Streaming gives the same text as the chunks concatenated, ending with a finish reason.
	stream, err := c.CreateCompletionStream(ctx, openai.CompletionRequest{Model: "spa", Prompt: "Turn 1:", MaxTokens: 15, Seed: &seed})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	finish := ""
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chunk.Choices {
			text.WriteString(ch.Text)
			if ch.FinishReason != "" {
				finish = ch.FinishReason
			}
		}
	}
	stream.Close()
	again, err := c.CreateCompletion(ctx, openai.CompletionRequest{Model: "spa", Prompt: "Turn 1:", MaxTokens: 15, Seed: &seed})
	if err != nil {
		t.Fatal(err)
	}
	if text.String() != again.Choices[0].Text || finish == "" {
		t.Errorf("stream %q (finish %q) vs non-stream %q", text.String(), finish, again.Choices[0].Text)
	}
	cs, err := c.CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{Model: "spa", MaxTokens: 8, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for {
		if _, err := cs.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		chunks++
	}
	cs.Close()
	if chunks < 2 {
		t.Errorf("chat stream had %d chunks", chunks)
	}
}

func TestTokenIDPromptsAndVLLMExtras(t *testing.T) {
	_, hs := startServer(t, ServerOptions{})
	var resp wire.CompletionResponse
	body := `{"model":"spa","prompt":[[5,6,7,8],[9,10]],"max_tokens":6,"temperature":0,"return_token_ids":true,"logprobs":0,"return_tokens_as_token_ids":true}`
	if code := post(t, hs.URL+"/v1/completions", body, &resp); code != 200 {
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
	post(t, hs.URL+"/v1/completions", body, &again)
	for i := range resp.Choices {
		if a, b := resp.Choices[i].TokenIDs, again.Choices[i].TokenIDs; fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("greedy choice %d differs: %v vs %v", i, a, b)
		}
	}
	// Chat with return_token_ids gives the prompt ids at the top level.
	var cr wire.ChatResponse
	post(t, hs.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Turn 1:"}],"max_tokens":4,"return_token_ids":true,"logprobs":true,"top_logprobs":2}`, &cr)
	if len(cr.PromptTokenIDs) == 0 || len(cr.Choices[0].TokenIDs) == 0 || len(cr.Choices[0].Logprobs.Content[0].TopLogprobs) != 2 {
		t.Errorf("chat extras: %+v", cr)
	}
}

func TestStopStringsAndStopTokens(t *testing.T) {
	_, hs := startServer(t, ServerOptions{})
	var first wire.CompletionResponse
	post(t, hs.URL+"/v1/completions", `{"prompt":"Turn 1:","max_tokens":30,"temperature":0,"return_token_ids":true,"ignore_eos":true}`, &first)
	text := first.Choices[0].Text
	ids := first.Choices[0].TokenIDs
	if len(text) < 4 || len(ids) < 5 {
		t.Skipf("greedy output too short to test stops: %q", text)
	}
	stop := text[2:4]
	var r wire.CompletionResponse
	post(t, hs.URL+"/v1/completions", `{"prompt":"Turn 1:","max_tokens":30,"temperature":0,"ignore_eos":true,"stop":`+mustJSON(stop)+`}`, &r)
	if got := r.Choices[0]; got.Text != text[:strings.Index(text, stop)] || *got.FinishReason != "stop" || got.StopReason != stop {
		t.Errorf("stop %q: %+v (full %q)", stop, got, text)
	}
	post(t, hs.URL+"/v1/completions", `{"prompt":"Turn 1:","max_tokens":30,"temperature":0,"ignore_eos":true,"include_stop_str_in_output":true,"stop":[`+mustJSON(stop)+`]}`, &r)
	if got := r.Choices[0].Text; !strings.HasSuffix(got, stop) {
		t.Errorf("include_stop_str_in_output: %q", got)
	}
	var rs wire.CompletionResponse
	post(t, hs.URL+"/v1/completions", `{"prompt":"Turn 1:","max_tokens":30,"temperature":0,"ignore_eos":true,"return_token_ids":true,"stop_token_ids":[`+mustJSON(ids[3])+`]}`, &rs)
	got := rs.Choices[0]
	if n := len(got.TokenIDs); n == 0 || got.TokenIDs[n-1] != ids[3] || *got.FinishReason != "stop" || got.StopReason != float64(ids[3]) {
		t.Errorf("stop_token_ids %d: %+v", ids[3], got)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestErrorsAreOpenAIShaped(t *testing.T) {
	_, hs := startServer(t, ServerOptions{})
	cases := []struct {
		path, body string
		status     int
		param      string
	}{
		{"/v1/completions", `{"prompt":`, 400, ""},
		{"/v1/completions", `{"model":"nope","prompt":"x"}`, 404, "model"},
		{"/v1/completions", `{"prompt":"x","temperature":-1}`, 400, "temperature"},
		{"/v1/completions", `{"prompt":"x","top_p":0}`, 400, "top_p"},
		{"/v1/completions", `{"prompt":"x","top_k":-5}`, 400, "top_k"},
		{"/v1/completions", `{"prompt":"x","n":0}`, 400, "n"},
		{"/v1/completions", `{"prompt":"x","max_tokens":0}`, 400, "max_tokens"},
		{"/v1/completions", `{"prompt":"x","max_tokens":100000}`, 400, "prompt"},
		{"/v1/completions", `{"prompt":[` + strings.Repeat("1,", 300) + `1]}`, 400, "prompt"},
		{"/v1/completions", `{"prompt":[1, 999999]}`, 400, ""},
		{"/v1/completions", `{"prompt":{}}`, 400, "prompt"},
		{"/v1/completions", `{"prompt":"x","stop":5}`, 400, "stop"},
		{"/v1/completions", `{"prompt":"x","logprobs":50}`, 400, "logprobs"},
		{"/v1/chat/completions", `{"messages":[]}`, 400, "messages"},
		{"/v1/chat/completions", `{"messages":[{"role":"tool","content":"x"}]}`, 400, "messages"},
		{"/update_weights", `{"weight_dir":"/nonexistent","version":3}`, 400, "weight_dir"},
		{"/update_weights", `{"version":3}`, 400, "weight_dir"},
	}
	for _, tc := range cases {
		var e struct {
			Error wire.Error `json:"error"`
		}
		status := post(t, hs.URL+tc.path, tc.body, &e)
		if status != tc.status || e.Error.Message == "" || e.Error.Param != tc.param {
			t.Errorf("%s %s: status %d, error %+v; want %d param %q", tc.path, tc.body, status, e.Error, tc.status, tc.param)
		}
	}
	// The server still works after all that.
	var ok wire.CompletionResponse
	if code := post(t, hs.URL+"/v1/completions", `{"prompt":"x","max_tokens":2}`, &ok); code != 200 {
		t.Errorf("after errors: %d", code)
	}
}

func TestAPIKeys(t *testing.T) {
	_, hs := startServer(t, ServerOptions{APIKey: "k1", AdminKey: "admin"})
	if _, err := client(hs, "wrong").ListModels(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := client(hs, "k1").ListModels(context.Background()); err != nil {
		t.Errorf("right key: %v", err)
	}
	req, _ := http.NewRequest("POST", hs.URL+"/pause", nil)
	req.Header.Set("Authorization", "Bearer k1")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("pause with the API key instead of the admin key: %v %v", resp.StatusCode, err)
	}
	if resp, _ := http.Get(hs.URL + "/health"); resp.StatusCode != 200 {
		t.Errorf("health needs no key: %d", resp.StatusCode)
	}
}

// TestWeightUpdateUnderLoad swaps weights while requests stream in: none fails, and requests after
// the update report the new version.
func TestWeightUpdateUnderLoad(t *testing.T) {
	s, hs := startServer(t, ServerOptions{})
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
				code := post(t, hs.URL+"/v1/completions", `{"prompt":"Turn `+mustJSON(w*100+i)+`:","max_tokens":8}`, &r)
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
	if code := post(t, hs.URL+"/update_weights", `{"weight_dir":`+mustJSON(next)+`,"version":1}`, &upd); code != 200 {
		t.Fatalf("update: %d %v", code, upd)
	}
	var after wire.CompletionResponse
	post(t, hs.URL+"/v1/completions", `{"prompt":"x","max_tokens":3}`, &after)
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
	if code := post(t, hs.URL+"/v1/completions", `{"model":"spa-v0","prompt":"x","max_tokens":3}`, &old); code != 200 || old.Model != "spa-v0" {
		t.Errorf("old version: %d %q", code, old.Model)
	}
	names := []string{}
	for _, v := range s.Engine().Versions() {
		names = append(names, v.Name)
	}
	if len(names) != 2 {
		t.Errorf("versions %v", names)
	}
	_ = bytes.MinRead
}

// TestNodeSDK drives the server with the official openai npm SDK (testdata/npm/check.mjs).
func TestNodeSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the openai npm SDK test is skipped")
	}
	if _, err := os.Stat("testdata/npm/node_modules/openai"); err != nil {
		t.Skip("the openai npm package is missing (run 'make setup' or 'npm ci' in inference/testdata/npm)")
	}
	_, hs := startServer(t, ServerOptions{APIKey: "node-key"})
	cmd := exec.Command(node, "check.mjs", hs.URL+"/v1", "node-key")
	cmd.Dir = "testdata/npm"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	checkSDKReport(t, out)
}

// TestPythonOpenAISDK drives the server with the official openai Python SDK, the client most RL
// code uses (testdata/python/check_openai.py, in the virtual environment scripts/pyenv.sh makes).
func TestPythonOpenAISDK(t *testing.T) {
	if _, err := os.Stat("testdata/python/.venv/.spa-requirements"); err != nil {
		t.Skip("the openai Python SDK's virtual environment is missing; run scripts/pyenv.sh inference/testdata/python (needs python3 with venv and PyPI)")
	}
	_, hs := startServer(t, ServerOptions{APIKey: "py-key"})
	cmd := exec.Command(filepath.Join(".venv", "bin", "python"), "check_openai.py", hs.URL+"/v1", "py-key")
	cmd.Dir = "testdata/python"
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("python: %v\n%s\n%s", err, out, stderr)
	}
	checkSDKReport(t, out)
}

// checkSDKReport asserts on what an official SDK saw of the server (the same JSON from the npm
// and the Python SDK): models, completions with n and logprobs, token ids through vLLM's extra
// fields, chat logprobs, streaming equal to non-streaming, and OpenAI-shaped 404 and 400 errors.
func checkSDKReport(t *testing.T, out []byte) {
	t.Helper()
	var got struct {
		Models     []string
		Completion struct {
			Choices, Logprobs, Usage int
			Model, Finish            string
		}
		TokenIDs struct {
			Prompt    []int
			Generated int
		}
		Chat struct {
			Role     string
			Logprobs int
		}
		Stream struct {
			Chunks int
			Equal  bool
		}
		UnknownModel struct {
			Status  int
			Message string
		}
		BadTemperature struct {
			Status int
			Param  string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("%s", out)
	switch {
	case len(got.Models) != 2 || got.Completion.Choices != 2 || got.Completion.Model != "spa-v0" || got.Completion.Logprobs == 0:
		t.Errorf("models/completion: %+v", got)
	case len(got.TokenIDs.Prompt) != 3 || got.TokenIDs.Generated == 0:
		t.Errorf("token ids: %+v", got.TokenIDs)
	case got.Chat.Role != "assistant" || got.Chat.Logprobs == 0:
		t.Errorf("chat: %+v", got.Chat)
	case got.Stream.Chunks < 2 || !got.Stream.Equal:
		t.Errorf("stream: %+v", got.Stream)
	case got.UnknownModel.Status != 404 || got.BadTemperature.Status != 400 || got.BadTemperature.Param != "temperature":
		t.Errorf("errors: %+v %+v", got.UnknownModel, got.BadTemperature)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	_, hs := startServer(t, ServerOptions{})
	post(t, hs.URL+"/v1/completions", `{"prompt":"Turn 1:","max_tokens":3}`, nil)
	resp, err := http.Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"spa_generated_tokens_total 3", "spa_queue_depth 0", "spa_running_sequences 0", "spa_loaded_versions 1",
		"spa_kv_cache_usage_ratio 0", "spa_time_to_first_token_seconds_mean", `spa_version_info{model="spa-v0",latest="true"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

// TestLogprobsShareOneDistribution: away from temperature 1, a sampled token's logprob and its
// own entry among top_logprobs are the same number (they once came from different temperatures).
func TestLogprobsShareOneDistribution(t *testing.T) {
	_, hs := startServer(t, ServerOptions{})
	for _, temp := range []float64{0.4, 1, 2} {
		var r wire.CompletionResponse
		body := fmt.Sprintf(`{"prompt":[5,6,7],"max_tokens":12,"temperature":%v,"seed":3,"logprobs":20,"return_tokens_as_token_ids":true,"ignore_eos":true}`, temp)
		if code := post(t, hs.URL+"/v1/completions", body, &r); code != 200 {
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
