package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileCommandLines gives the CLI input a probe found mishandled: each must fail with a
// message that names the problem, never run with a silently corrected value.
func TestHostileCommandLines(t *testing.T) {
	ckpt := filepath.Join(t.TempDir(), "tiny")
	if code, _, errOut := spa(t, "model", "init", "--out", ckpt, "--vocab", "400", "--corpus-seeds", "5"); code != 0 {
		t.Fatal(errOut)
	}
	// Copies of the checkpoint, each broken one way.
	broken := func(name string, breakIt func(dir string)) string {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.CopyFS(dir, os.DirFS(ckpt)); err != nil {
			t.Fatal(err)
		}
		breakIt(dir)
		return dir
	}
	hugeConfig := broken("huge", func(dir string) {
		var cfg map[string]any
		data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
		json.Unmarshal(data, &cfg)
		cfg["hidden_size"] = 1 << 40
		data, _ = json.Marshal(cfg)
		os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644)
	})
	escapingIndex := broken("escape", func(dir string) {
		os.Remove(filepath.Join(dir, "model.safetensors"))
		os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), []byte(`{"weight_map":{"model.embed_tokens.weight":"../../../../etc/passwd"}}`), 0o644)
	})
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"model", "info", hugeConfig}, "more than"},
		{[]string{"model", "info", escapingIndex}, "plain file names inside the checkpoint directory"},
		{[]string{"env", "serve", "sokoban", "--bus", "nats://127.0.0.1:1", "--session-ttl", "-5s"}, "env.session_ttl"},
		{[]string{"env", "serve", "sokoban", "--bus", "nats://127.0.0.1:1", "--replicas", "-1"}, "env.replicas"},
		{[]string{"env", "serve", "sokoban", "--bus", "nats://127.0.0.1:1", "--replicas", "two"}, "env.replicas"},
		{[]string{"serve", "--model", escapingIndex, "--listen", "127.0.0.1:0"}, "plain file names inside"},
	}
	for _, c := range cases {
		code, _, errOut := spa(t, c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("spa %s: exit %d, stderr %q; want a failure naming %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
		if strings.Contains(errOut, "root:") {
			t.Errorf("spa %s printed a file from outside the checkpoint: %s", strings.Join(c.args, " "), errOut)
		}
	}
}
