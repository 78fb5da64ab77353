package main

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
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
