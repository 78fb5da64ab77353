package main

import (
	"encoding/json"
	"fmt"
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
	if code, _, errOut := spa(t, "model", "init", "--preset", "qwen2.5-0.5b", "--out", t.TempDir()); code == 0 || !strings.Contains(errOut, "needs --tokenizer DIR") {
		t.Errorf("qwen2.5-0.5b without a tokenizer: %d %s", code, errOut)
	}
	// --layers makes the preset shallower, for tests of the plumbing.
	two := filepath.Join(t.TempDir(), "two")
	if code, out, errOut := spa(t, "model", "init", "--out", two, "--layers", "2", "--vocab", "400", "--corpus-seeds", "5"); code != 0 || !strings.Contains(out, "2 layers") {
		t.Fatalf("init --layers 2: %d %s %s", code, out, errOut)
	}
	if _, out, _ := spa(t, "model", "info", two); !strings.Contains(out, "layers         2, hidden 128") {
		t.Errorf("info of a 2-layer model:\n%s", out)
	}
	if code, _, errOut := spa(t, "model", "init", "--out", t.TempDir(), "--layers", "-1"); code == 0 || !strings.Contains(errOut, "--layers -1") {
		t.Errorf("--layers -1: %d %s", code, errOut)
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
	code, chatOut, errOut := spa(t, "eval", "--endpoint", endpoint, "--env", "frozenlake", "--mode", "chat", "--puzzles", "2", "--first-seed", "5", "--k", "1", "--set", "rollout.max_tokens=16", "--set", "rollout.max_turns=2")
	if code != 0 || !strings.Contains(chatOut, "Pass@1") || !strings.Contains(chatOut, "2 (2 puzzles x 1, seeds 5..6), 0 failed") || !strings.Contains(chatOut, "first move from the state") {
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
	// spa learn trains a PPO step on those trajectories, loads the result into the server and
	// moves the run's policy version.
	ckpt := filepath.Join(t.TempDir(), "ppo")
	code, lOut, errOut := spa(t, "learn", "--stage", "ppo", "--model", dir, "--bus", busURL, "--run", "r7", "--sync", "spa="+endpoint, "--out", ckpt,
		"--set", "learner.ppo.steps=1", "--set", "rollout.groups=2", "--set", "rollout.group_size=2", "--set", "learner.ppo.keep_group_ratio=1")
	if code != 0 || !strings.Contains(lOut, "ppo: 1 steps, version 1; trained on 4 trajectories") {
		t.Fatalf("learn ppo: %d %s %s", code, lOut, errOut)
	}
	if code, pOut, errOut := spa(t, "policy", "show", "--bus", busURL, "--run", "r7"); code != 0 || !strings.Contains(pOut, "spa-v1") {
		t.Errorf("policy after learn: %d %s %s", code, pOut, errOut)
	}
	models, err := http.Get(endpoint + "/models")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(models.Body)
	models.Body.Close()
	if !strings.Contains(string(mb), `"spa-v1"`) {
		t.Errorf("server models after learn: %s", mb)
	}
	if code, _, errOut := spa(t, "learn", "--stage", "ppo", "--model", dir, "--run", "r7"); code == 0 || !strings.Contains(errOut, "--bus") {
		t.Errorf("learn ppo without a bus: %d %s", code, errOut)
	}
	if code, _, errOut := spa(t, "learn", "--stage", "ppo", "--model", dir, "--bus", busURL, "--run", "r7", "--sync", "vllm=http://x"); code == 0 || !strings.Contains(errOut, "unknown backend") {
		t.Errorf("learn ppo with a bad backend: %d %s", code, errOut)
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

// TestLearnSFTCommand fine-tunes a tiny model on a JSON-lines file and checks the checkpoint is a
// complete, loadable Hugging Face directory; bad input fails with a message that names it.
func TestLearnSFTCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	if code, _, errOut := spa(t, "model", "init", "--out", dir, "--vocab", "400", "--corpus-seeds", "5"); code != 0 {
		t.Fatal(errOut)
	}
	data := filepath.Join(t.TempDir(), "sft.jsonl")
	var lines []string
	for i := range 6 {
		lines = append(lines, fmt.Sprintf(`{"messages":[{"role":"system","content":"You're a helpful assistant."},{"role":"user","content":"Turn 1:\nState:\n#P_%d#"},{"role":"assistant","content":"<think><observation>#P_#</observation><prediction>#_P#</prediction></think><answer>Right</answer>"}]}`, i))
	}
	os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	out := filepath.Join(t.TempDir(), "sft")
	code, stdout, errOut := spa(t, "learn", "--stage", "sft", "--model", dir, "--data", data, "--out", out, "--val-share", "0.34",
		"--set", "learner.sft.epochs=2", "--set", "learner.sft.batch_size=2")
	if code != 0 || !strings.Contains(stdout, "sft: 4 steps") || !strings.Contains(errOut, "4 training and 2 validation sequences") {
		t.Fatalf("learn sft: %d %s %s", code, stdout, errOut)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "trainer_state.json", "optimizer/state.safetensors"} {
		if _, err := os.Stat(filepath.Join(out, "step-000004", f)); err != nil {
			t.Errorf("checkpoint lacks %s", f)
		}
	}
	// vLLM loads every *.safetensors at the top of a model directory as weights: only the model's
	// may be there.
	if top, _ := filepath.Glob(filepath.Join(out, "step-000004", "*.safetensors")); len(top) != 1 || filepath.Base(top[0]) != "model.safetensors" {
		t.Errorf("safetensors files at the top of the checkpoint: %v", top)
	}
	if code, info, errOut := spa(t, "model", "info", filepath.Join(out, "step-000004")); code != 0 || !strings.Contains(info, "chatml") {
		t.Errorf("model info of the checkpoint: %d %s %s", code, info, errOut)
	}
	metrics, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if n := strings.Count(string(metrics), `"stage":"sft"`); n != 4 {
		t.Errorf("metrics.jsonl has %d sft lines, want 4", n)
	}
	os.WriteFile(data, []byte("{\"messages\": 3}\n"), 0o644)
	if code, _, errOut := spa(t, "learn", "--stage", "sft", "--model", dir, "--data", data, "--out", out); code == 0 || !strings.Contains(errOut, "sft.jsonl:1") {
		t.Errorf("bad data: %d %s", code, errOut)
	}
	if code, _, errOut := spa(t, "learn", "--stage", "rl", "--model", dir); code == 0 || !strings.Contains(errOut, "want sft or ppo") {
		t.Errorf("bad stage: %d %s", code, errOut)
	}
}
