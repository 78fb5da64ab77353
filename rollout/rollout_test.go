package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spa-rl/spa/envs"
	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/domain"
	"github.com/spa-rl/spa/model/tokenizer"
)

func filepathTemp() (string, error) { return os.MkdirTemp("", "spa-rollout-test-") }

func TestParse(t *testing.T) {
	wm := "<think><observation>P at 1</observation><prediction>P at 2</prediction></think><answer>Up || left ||  Down</answer>"
	cases := []struct {
		name, in string
		mode     Mode
		ok       bool
		actions  string
	}{
		{"world model", wm, WorldModel, true, "Up|left|Down"},
		{"world model text in base mode", wm, Base, true, "Up|left|Down"},
		{"base", "<think>go</think><answer>Right</answer>", Base, true, "Right"},
		{"base lacks observation", "<think>go</think><answer>Right</answer>", WorldModel, false, "Right"},
		{"no think", "<answer>Up</answer>", Base, false, "Up"},
		{"answer before think", "<answer>Up</answer><think>x</think>", Base, false, "Up"},
		{"empty answer", "<think>x</think><answer> || </answer>", Base, false, ""},
		{"unclosed answer", "<think>x</think><answer>Up", Base, false, ""},
		{"truncated", "<think><observation>P at", WorldModel, false, ""},
		{"garbage", "\x00\xff<<<answer>>>", Base, false, ""},
		{"too many actions", "<think>x</think><answer>a||b||c||d||e||f||g</answer>", Base, true, "a|b|c|d|e"},
		{"sudoku", "<think>x</think><answer>1,2,3 || 4,4,1</answer>", Base, true, "1,2,3|4,4,1"},
	}
	for _, tc := range cases {
		p := Parse(tc.in, tc.mode, 5)
		if p.FormatOK != tc.ok || strings.Join(p.Actions, "|") != tc.actions {
			t.Errorf("%s: ok %v actions %q, want %v %q", tc.name, p.FormatOK, strings.Join(p.Actions, "|"), tc.ok, tc.actions)
		}
	}
	if p := Parse(wm, WorldModel, 5); p.Observation != "P at 1" || p.Prediction != "P at 2" {
		t.Errorf("tags: %+v", p)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"<think><observation>a</observation><prediction>b</prediction></think><answer>Up</answer>", "<answer>||||</answer>", "<think><think></answer><answer>", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, m := range []Mode{Base, WorldModel} {
			p := Parse(s, m, 5)
			if len(p.Actions) > 5 {
				t.Fatalf("%d actions", len(p.Actions))
			}
			if p.FormatOK && len(p.Actions) == 0 {
				t.Fatal("format ok without actions")
			}
			for _, a := range p.Actions {
				if a == "" || strings.Contains(a, "||") {
					t.Fatalf("bad action %q", a)
				}
			}
		}
	})
}

func TestPassAtK(t *testing.T) {
	for _, c := range []struct {
		n, c, k int
		want    float64
	}{
		{5, 2, 1, 0.4}, {5, 2, 2, 0.7}, {8, 0, 8, 0}, {8, 1, 8, 1}, {10, 3, 4, 1 - 35.0/210}, {8, 8, 1, 1}, {100, 1, 1, 0.01},
	} {
		if got := PassAtK(c.n, c.c, c.k); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("pass@%d(n=%d, c=%d) = %v, want %v", c.k, c.n, c.c, got, c.want)
		}
	}
	if !math.IsNaN(PassAtK(3, 1, 5)) {
		t.Error("k > n gave a number")
	}
}

// solve finds a shortest action sequence for a Sokoban seed by breadth-first search over
// replays, so scripted "perfect play" needs no knowledge of the level.
func solve(t *testing.T, seed int64) []string {
	t.Helper()
	type node struct{ path []string }
	replay := func(path []string) (envs.Env, envs.Step) {
		env, _ := envs.New("sokoban", "6x6-1box")
		env.Reset(seed)
		var st envs.Step
		for _, a := range path {
			st, _ = env.Step(a)
		}
		return env, st
	}
	seen := map[string]bool{}
	queue := []node{{}}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, a := range []string{"Up", "Down", "Left", "Right"} {
			path := append(append([]string{}, n.path...), a)
			env, st := replay(path)
			if st.Success {
				return path
			}
			key := env.Render(envs.Raw)
			if !st.Valid || st.Done || seen[key] {
				continue
			}
			seen[key] = true
			queue = append(queue, node{path})
		}
	}
	t.Fatalf("seed %d has no solution", seed)
	return nil
}

// scripted is an LLM that answers from a list of responses, in turn order.
type scripted struct {
	responses []string
	tok       *tokenizer.Tokenizer
	calls     int
	prompts   [][]int
}

func (s *scripted) Generate(_ context.Context, req GenRequest) (GenResponse, error) {
	text := s.responses[min(s.calls, len(s.responses)-1)]
	s.calls++
	s.prompts = append(s.prompts, append([]int(nil), req.PromptIDs...))
	resp := GenResponse{Text: text, Model: "spa-v3", FinishReason: "stop"}
	if s.tok != nil {
		end, _ := s.tok.ID("<|im_end|>")
		resp.TokenIDs = append(s.tok.Encode(text), end)
		resp.Logprobs = make([]float32, len(resp.TokenIDs))
		for i := range resp.Logprobs {
			resp.Logprobs[i] = -0.5
		}
	}
	return resp, nil
}

var (
	tokOnce sync.Once
	tokens  *Tokens
	tokErr  error
	tokDir  string
)

// domainTokens builds a small domain tokenizer once for the package's tests.
func domainTokens(t *testing.T) *Tokens {
	t.Helper()
	tokOnce.Do(func() {
		tokDir, tokErr = filepathTemp()
		if tokErr != nil {
			return
		}
		if _, _, _, tokErr = domain.Write(tokDir, domain.Options{VocabSize: 400, Seeds: 5}); tokErr != nil {
			return
		}
		var tok *tokenizer.Tokenizer
		if tok, tokErr = tokenizer.Load(filepath.Join(tokDir, "tokenizer.json")); tokErr != nil {
			return
		}
		var tmpl *chat.Template
		if tmpl, tokErr = chat.Load(filepath.Join(tokDir, "tokenizer_config.json")); tokErr != nil {
			return
		}
		tokens, tokErr = NewTokens(tok, tmpl)
	})
	if tokErr != nil {
		t.Fatal(tokErr)
	}
	return tokens
}

func chunk(actions []string, n int) []string {
	var out []string
	for len(actions) > 0 {
		k := min(n, len(actions))
		out = append(out, "<think><observation>x</observation><prediction>y</prediction></think><answer>"+strings.Join(actions[:k], " || ")+"</answer>")
		actions = actions[k:]
	}
	return out
}

func TestPerfectPlayTokenSequencesAndRewards(t *testing.T) {
	tk := domainTokens(t)
	for seed := int64(0); seed < 6; seed++ {
		sol := solve(t, seed)
		llm := &scripted{responses: chunk(sol, 2), tok: tk.Tok}
		env, _ := envs.New("sokoban", "6x6-1box")
		tr, err := Play(context.Background(), env, llm, tk, EpisodeOptions{
			PromptOptions: PromptOptions{Mode: WorldModel, Render: envs.Coords, MaxActionsPerTurn: 5},
			MaxTurns:      10, Run: "r", ID: fmt.Sprint("e", seed), Seed: seed,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !tr.Success || len(tr.Turns) != (len(sol)+1)/2 || tr.Model != "spa-v3" || tr.PolicyVersion != 3 {
			t.Fatalf("seed %d (solution %v): success %v, %d turns, model %q v%d", seed, sol, tr.Success, len(tr.Turns), tr.Model, tr.PolicyVersion)
		}
		// Rewards are the environment's: replay and sum.
		ref, _ := envs.New("sokoban", "6x6-1box")
		ref.Reset(seed)
		want := 0.0
		for _, a := range sol {
			st, _ := ref.Step(a)
			want += st.Reward
		}
		if math.Abs(tr.Reward-want) > 1e-9 {
			t.Errorf("seed %d: reward %v, environment says %v", seed, tr.Reward, want)
		}
		// The prompt of turn k is exactly the concatenation of everything before it.
		var seq []int
		for k, turn := range tr.Turns {
			for _, id := range turn.PromptIDs {
				seq = append(seq, int(id))
			}
			if fmt.Sprint(seq) != fmt.Sprint(llm.prompts[k]) {
				t.Fatalf("seed %d turn %d: the server saw a prompt that is not the recorded sequence", seed, k)
			}
			if len(turn.LossMask) != len(turn.ResponseIDs) || len(turn.Logprobs) != len(turn.ResponseIDs) {
				t.Fatalf("turn %d: mask/logprobs do not cover the response", k)
			}
			for _, id := range turn.ResponseIDs {
				seq = append(seq, int(id))
			}
		}
		text, _ := tk.Tok.Decode(seq, false)
		if !strings.HasPrefix(text, "<|im_start|>system\nYou're a helpful assistant.<|im_end|>\n<|im_start|>user\n") || strings.Count(text, "<|im_start|>assistant\n") != len(tr.Turns) {
			t.Fatalf("the sequence is not well-formed ChatML:\n%s", text)
		}
		if !strings.Contains(text, "Turn 2:\nState:\n") && len(tr.Turns) > 1 {
			t.Errorf("no second turn in:\n%s", text)
		}
	}
}

func TestGarbageGetsPenaltiesAndEnds(t *testing.T) {
	tk := domainTokens(t)
	llm := &scripted{responses: []string{"I refuse.", "<think>x</think><answer>Jump || Up</answer>", "\x00\x01"}, tok: tk.Tok}
	env, _ := envs.New("sokoban", "6x6-1box")
	tr, err := Play(context.Background(), env, llm, tk, EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 5, Run: "r", ID: "g", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Turns) != 5 || tr.Success {
		t.Fatalf("%d turns, success %v", len(tr.Turns), tr.Success)
	}
	if r := tr.Turns[0].Reward; r != FormatPenalty || tr.Turns[0].FormatOK {
		t.Errorf("refusal: reward %v", r)
	}
	// "Jump" is invalid: penalty on top of the valid Up's own reward.
	if tr.Turns[1].Valid[0] || !tr.Turns[1].Valid[1] || tr.Turns[1].Reward >= 0 {
		t.Errorf("invalid action turn: %+v", tr.Turns[1])
	}
}

// fakeServer answers /v1/completions like vLLM with scripted text, recording what it got.
func fakeServer(t *testing.T, tk *Tokens, answer func(n int, body map[string]any) (int, string)) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		n := int(calls.Add(1))
		status, text := answer(n, body)
		if status != 200 {
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":{"message":"scripted failure %d","type":"x","code":%d}}`, status, status)
			return
		}
		end, _ := tk.Tok.ID("<|im_end|>")
		ids := append(tk.Tok.Encode(text), end)
		lps := make([]float64, len(ids))
		json.NewEncoder(w).Encode(map[string]any{"id": "x", "object": "text_completion", "model": "spa-v1",
			"choices": []any{map[string]any{"index": 0, "text": text, "finish_reason": "stop", "token_ids": ids,
				"logprobs": map[string]any{"token_logprobs": lps, "tokens": []string{}, "top_logprobs": []any{}, "text_offset": []int{}}}}})
	}))
	t.Cleanup(hs.Close)
	return hs, &calls
}

func TestClientSendsTokenIDsAndRetries(t *testing.T) {
	tk := domainTokens(t)
	var seen map[string]any
	hs, calls := fakeServer(t, tk, func(n int, body map[string]any) (int, string) {
		seen = body
		if n <= 2 {
			return 503, ""
		}
		return 200, "<think>x</think><answer>Up</answer>"
	})
	c, err := NewClient(ClientOptions{BaseURL: hs.URL, Retries: 3})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Generate(context.Background(), GenRequest{Model: "m", PromptIDs: []int{5, 6, 7}, MaxTokens: 9, Temperature: 0, TopK: 4})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 || resp.Model != "spa-v1" || len(resp.TokenIDs) == 0 || len(resp.Logprobs) != len(resp.TokenIDs) {
		t.Fatalf("%d calls, %+v", calls.Load(), resp)
	}
	if fmt.Sprint(seen["prompt"]) != "[5 6 7]" || seen["return_token_ids"] != true || seen["temperature"] != 0.0 || seen["max_tokens"] != 9.0 || seen["top_k"] != 4.0 {
		t.Errorf("request body: %v", seen)
	}
	// A server that keeps failing gives up with the attempts counted; a 400 is not retried.
	bad, badCalls := fakeServer(t, tk, func(int, map[string]any) (int, string) { return 500, "" })
	c2, _ := NewClient(ClientOptions{BaseURL: bad.URL, Retries: 2})
	if _, err := c2.Generate(context.Background(), GenRequest{PromptIDs: []int{1}}); err == nil || badCalls.Load() != 3 || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Errorf("always failing: %v after %d calls", err, badCalls.Load())
	}
	four, fourCalls := fakeServer(t, tk, func(int, map[string]any) (int, string) { return 400, "" })
	c3, _ := NewClient(ClientOptions{BaseURL: four.URL})
	if _, err := c3.Generate(context.Background(), GenRequest{PromptIDs: []int{1}}); err == nil || fourCalls.Load() != 1 {
		t.Errorf("400: %v after %d calls", err, fourCalls.Load())
	}
	// Wrong endpoints say what to check.
	nothing := httptest.NewServer(http.NotFoundHandler())
	defer nothing.Close()
	c4, _ := NewClient(ClientOptions{BaseURL: nothing.URL + "/api", Retries: 1})
	if _, err := c4.Generate(context.Background(), GenRequest{PromptIDs: []int{1}}); err == nil || !strings.Contains(err.Error(), "ending in /v1") {
		t.Errorf("wrong path: %v", err)
	}
	c5, _ := NewClient(ClientOptions{BaseURL: "http://127.0.0.1:1", Retries: 1})
	if _, err := c5.Generate(context.Background(), GenRequest{PromptIDs: []int{1}}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("nobody listening: %v", err)
	}
	// A slow server costs the timeout per attempt, then an error.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(2 * time.Second) }))
	defer slow.Close()
	c6, _ := NewClient(ClientOptions{BaseURL: slow.URL, Timeout: 100 * time.Millisecond, Retries: 1})
	start := time.Now()
	if _, err := c6.Generate(context.Background(), GenRequest{PromptIDs: []int{1}}); err == nil || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("slow server: %v after %s", err, time.Since(start))
	}
}

func TestEvaluateCountsPassAtK(t *testing.T) {
	tk := domainTokens(t)
	// Solve even seeds only: Pass@1 = Pass@k = 0.5 over 4 puzzles.
	solutions := map[int64][]string{}
	for s := int64(0); s < 4; s++ {
		solutions[s] = solve(t, s)
	}
	llm := &seedAware{solutions: solutions, tok: tk.Tok}
	res, err := Evaluate(context.Background(), func() (envs.Env, error) { return envs.New("sokoban", "6x6-1box") }, func() (LLM, error) { return llm, nil }, tk, EvalOptions{
		Episode: EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 5},
		Puzzles: 4, K: 3, Concurrency: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Episodes != 12 || res.Pass1 != 0.5 || res.PassK != 0.5 || res.PassKUnbiased != 0.5 || res.Failed != 0 {
		t.Errorf("%+v", res)
	}
	if fmt.Sprint(res.Successes, res.PassAt) != "[3 0 3 0] [0.5 0.5 0.5]" {
		t.Errorf("successes per puzzle %v, pass@1..3 %v", res.Successes, res.PassAt)
	}

	// Another range of puzzles (seeds 1..3, for tuning apart from the reported ones) shifts
	// which puzzles are solved; a negative first seed is refused.
	shifted, err := Evaluate(context.Background(), func() (envs.Env, error) { return envs.New("sokoban", "6x6-1box") }, func() (LLM, error) { return llm, nil }, tk, EvalOptions{
		Episode: EpisodeOptions{PromptOptions: PromptOptions{Mode: Base, MaxActionsPerTurn: 5}, MaxTurns: 5},
		Puzzles: 3, FirstSeed: 1, K: 2, Concurrency: 3,
	})
	if err != nil || fmt.Sprint(shifted.FirstSeed, shifted.Successes) != "1 [0 2 0]" {
		t.Errorf("first seed 1: %+v, %v", shifted, err)
	}
	if _, err := Evaluate(context.Background(), nil, nil, tk, EvalOptions{Puzzles: 1, K: 1, FirstSeed: -1}); err == nil || !strings.Contains(err.Error(), "first seed") {
		t.Errorf("negative first seed: %v", err)
	}
}

// seedAware solves even seeds and answers nonsense on odd ones; it reads the seed from the
// state text by matching each known level's rendering.
type seedAware struct {
	solutions map[int64][]string
	tok       *tokenizer.Tokenizer
	mu        sync.Mutex
}

func (s *seedAware) Generate(_ context.Context, req GenRequest) (GenResponse, error) {
	prompt, _ := s.tok.Decode(req.PromptIDs, false)
	text := "<think>x</think><answer>Jump</answer>"
	turn := strings.Count(prompt, "<|im_start|>assistant\n")
	for seed, sol := range s.solutions {
		env, _ := envs.New("sokoban", "6x6-1box")
		env.Reset(seed)
		if seed%2 == 0 && strings.Contains(prompt, "Turn 1:\nState:\n"+env.Render(envs.Coords)+"\n") {
			if parts := chunk(sol, 5); turn-1 < len(parts) {
				text = strings.Replace(parts[turn-1], "<observation>x</observation><prediction>y</prediction>", "", 1)
			}
		}
	}
	end, _ := s.tok.ID("<|im_end|>")
	ids := append(s.tok.Encode(text), end)
	return GenResponse{Text: text, TokenIDs: ids, Logprobs: make([]float32, len(ids)), Model: "m"}, nil
}

// TestRenderModeFallsBackToWhatTheEnvironmentOffers: a mode the spec does not list would render
// as nothing (a Gymnasium adapter offers only raw text), so the first listed mode is used instead.
func TestRenderModeFallsBackToWhatTheEnvironmentOffers(t *testing.T) {
	for _, c := range []struct {
		modes     []envs.RenderMode
		want, got envs.RenderMode
	}{
		{[]envs.RenderMode{envs.Raw, envs.Coords}, envs.Coords, envs.Coords},
		{[]envs.RenderMode{envs.Raw}, envs.Coords, envs.Raw},
		{nil, envs.Coords, envs.Coords},
	} {
		if got := renderMode(envs.Spec{RenderModes: c.modes}, c.want); got != c.got {
			t.Errorf("modes %v, want %s: got %s", c.modes, c.want, got)
		}
	}
}

// TestStateDependence checks the mutual information between puzzle and first action on counts
// worked by hand, and its chance level under shuffles.
func TestStateDependence(t *testing.T) {
	for _, tc := range []struct {
		name         string
		first        [][]string
		bits, chance float64
		chanceWithin float64
		// p is the permutation p-value: the share of deals scoring at least bits.
		p float64
	}{
		// Each puzzle has its own move: 1 bit. Dealing {up, up, down, down} to two puzzles of
		// two gives two pure puzzles (1 bit) in 2 of the 6 orders, mixed ones (0 bits) otherwise.
		{"state decides", [][]string{{"up", "up"}, {"down", "down"}}, 1, 1.0 / 3, 0.05, 1.0 / 3},
		// The same mix on every puzzle: nothing to learn from the puzzle, and no shuffle finds any.
		{"state ignored", [][]string{{"up", "down"}, {"up", "down"}}, 0, 1.0 / 3, 0.05, 1},
		{"one move only", [][]string{{"left", "left"}, {"left"}}, 0, 0, 0, 1},
		// Four puzzles, four moves, each its own: log2(4) = 2 bits.
		{"four moves", [][]string{{"up"}, {"down"}, {"left"}, {"right"}}, 2, 2, 0, 1},
		{"no actions", [][]string{nil, nil}, 0, 0, 0, 1},
	} {
		bits, chance, p := StateDependence(tc.first, 2000, 7)
		if math.Abs(bits-tc.bits) > 1e-12 || math.Abs(chance-tc.chance) > tc.chanceWithin+1e-12 || math.Abs(p-tc.p) > tc.chanceWithin+1e-12 {
			t.Errorf("%s: %.4f bits (want %.4f), chance %.4f (want %.4f ± %.2f), p %.3f (want %.3f)", tc.name, bits, tc.bits, chance, tc.chance, tc.chanceWithin, p, tc.p)
		}
	}
}
