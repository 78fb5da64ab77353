package metrics

import (
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestAppendLines: concurrent writes land as whole lines, a reopened log keeps its lines, NaN goes
// through Number as null and is an error otherwise.
func TestAppendLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "metrics.jsonl")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = l.Write(map[string]any{"step": i, "loss": Number(math.NaN())}) }()
	}
	wg.Wait()
	if err := l.Write(struct{ X float64 }{math.NaN()}); err == nil {
		t.Error("a NaN was written")
	}
	l.Close()
	l, _ = Open(path)
	_ = l.Write(map[string]int{"step": 20})
	l.Close()
	data, _ := os.ReadFile(path)
	lines := 0
	for _, b := range data {
		if b == '\n' {
			lines++
		}
	}
	if lines != 21 || string(data[:len(`{"loss":null`)]) != `{"loss":null` {
		t.Errorf("%d lines:\n%s", lines, data)
	}
}
