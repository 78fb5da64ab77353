package main

import (
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
