package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/model/tokenizer"
)

func TestModelInitAndInfo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	code, out, errOut := spa(t, "model", "init", "--preset", "tiny", "--out", dir, "--vocab", "400", "--corpus-seeds", "5")
	if code != 0 || !strings.Contains(out, "Qwen2 tiny preset") {
		t.Fatalf("init: %d %s %s", code, out, errOut)
	}
	code, out, errOut = spa(t, "model", "info", dir)
	for _, want := range []string{"[Qwen2ForCausalLM] (qwen2)", "layers         4, hidden 128", "2 KV heads", "vocabulary     400", "byte-level BPE, 400 ids (11 added)", "chat template  chatml"} {
		if !strings.Contains(out, want) {
			t.Errorf("info lacks %q:\n%s%s", want, out, errOut)
		}
	}
	if code, _, errOut := spa(t, "model", "init", "--out", dir); code == 0 || !strings.Contains(errOut, "not empty") {
		t.Errorf("init over a checkpoint: %d %s", code, errOut)
	}
	if code, _, errOut := spa(t, "model", "init", "--preset", "huge", "--out", t.TempDir()); code == 0 || !strings.Contains(errOut, "unknown model preset") {
		t.Errorf("bad preset: %d %s", code, errOut)
	}
	// The checkpoint's tokenizer works with spa tokenize.
	if code, _, errOut := spa(t, "model", "info", t.TempDir()); code == 0 || !strings.Contains(errOut, "config.json") {
		t.Errorf("info of an empty dir: %d %s", code, errOut)
	}
}

func TestServeCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	if code, _, errOut := spa(t, "model", "init", "--out", dir, "--vocab", "400", "--corpus-seeds", "5"); code != 0 {
		t.Fatal(errOut)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	out := background(t, "serve", "--model", dir, "--listen", addr, "--set", "server.max_model_len=256", "--set", "server.api_key=secret")
	waitFor(t, "spa serve", func() bool { return strings.Contains(out.String(), "spa serve: ") })
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/completions", strings.NewReader(`{"prompt":"Turn 1:","max_tokens":5}`))
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"model":"spa-v0"`) {
		t.Errorf("completion: %d %s", resp.StatusCode, body)
	}
	if code, _, errOut := spa(t, "serve"); code == 0 || !strings.Contains(errOut, "--model") {
		t.Errorf("serve without a model: %d %s", code, errOut)
	}
}

// TestEvalAndRolloutAgainstSpaServe plays real episodes against spa serve with a tiny model: spa
// eval reports its metrics, and spa rollout publishes trajectories whose token sequences are
// well-formed and whose later turns hit the server's prefix cache.
func TestEvalAndRolloutAgainstSpaServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	if code, _, errOut := spa(t, "model", "init", "--out", dir, "--vocab", "500", "--corpus-seeds", "10"); code != 0 {
		t.Fatal(errOut)
	}
	free := func() string {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return l.Addr().String()
	}
	addr := free()
	out := background(t, "serve", "--model", dir, "--listen", addr, "--set", "server.max_model_len=2048")
	waitFor(t, "spa serve", func() bool { return strings.Contains(out.String(), "spa serve: ") })
	endpoint := "http://" + addr + "/v1"
	// A random model fails the format almost always, and episodes still end within their turns.
	common := []string{"--endpoint", endpoint, "--tokenizer", dir, "--env", "sokoban", "--set", "rollout.max_tokens=24", "--set", "rollout.max_turns=3"}
	code, evalOut, errOut := spa(t, append([]string{"eval", "--puzzles", "3", "--k", "2", "--json"}, common...)...)
	if code != 0 {
		t.Fatalf("eval: %s", errOut)
	}
	var res struct {
		Episodes int     `json:"episodes"`
		Model    string  `json:"model"`
		Pass1    float64 `json:"pass_at_1"`
		Failed   int     `json:"failed_episodes"`
	}
	if err := json.Unmarshal([]byte(evalOut), &res); err != nil || res.Episodes != 6 || res.Failed != 0 || res.Model != "spa-v0" {
		t.Fatalf("eval result %s (%v)", evalOut, err)
	}

	// Chat mode needs no tokenizer: the server renders the template.
	code, chatOut, errOut := spa(t, "eval", "--endpoint", endpoint, "--env", "frozenlake", "--mode", "chat", "--puzzles", "2", "--k", "1", "--set", "rollout.max_tokens=16", "--set", "rollout.max_turns=2")
	if code != 0 || !strings.Contains(chatOut, "Pass@1") || !strings.Contains(chatOut, "2 (2 puzzles x 1), 0 failed") {
		t.Fatalf("chat eval: %d %s %s", code, chatOut, errOut)
	}

	busAddr := free()
	busOut := background(t, "bus", "--listen", busAddr, "--store", filepath.Join(t.TempDir(), "nats"))
	waitFor(t, "spa bus", func() bool { return strings.Contains(busOut.String(), "JetStream on") })
	busURL := "nats://" + busAddr
	code, rOut, errOut := spa(t, append([]string{"rollout", "--bus", busURL, "--run", "r7", "--groups", "2", "--set", "rollout.group_size=2", "--workers", "3"}, common...)...)
	if code != 0 || !strings.Contains(rOut, "episodes 4") {
		t.Fatalf("rollout: %d %s %s", code, rOut, errOut)
	}
	file := filepath.Join(t.TempDir(), "r7.jsonl")
	if code, _, errOut := spa(t, "traj", "export", "--bus", busURL, "--run", "r7", "-o", file); code != 0 {
		t.Fatal(errOut)
	}
	data, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d trajectories exported", len(lines))
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range lines {
		tr, err := bus.DecodeTrajectory([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		var seq []int
		for _, turn := range tr.Turns {
			for _, id := range turn.PromptIDs {
				seq = append(seq, int(id))
			}
			for _, id := range turn.ResponseIDs {
				seq = append(seq, int(id))
			}
			if len(turn.LossMask) != len(turn.ResponseIDs) || len(turn.ResponseIDs) == 0 {
				t.Errorf("turn mask %d for %d response tokens", len(turn.LossMask), len(turn.ResponseIDs))
			}
		}
		text, _ := tok.Decode(seq, false)
		if tr.Model != "spa-v0" || !strings.HasPrefix(text, "<|im_start|>system\n") || strings.Count(text, "<|im_start|>assistant\n") != len(tr.Turns) {
			t.Errorf("trajectory %s: model %q, %d turns, text:\n%s", tr.ID, tr.Model, len(tr.Turns), text)
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "spa_prefix_cache_hits_total") || strings.Contains(string(metrics), "spa_prefix_cache_hits_total 0\n") {
		t.Errorf("multi-turn episodes never hit the prefix cache:\n%s", metrics)
	}
}
