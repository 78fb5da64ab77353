// Package metrics appends training and evaluation records to a JSON-lines file (metrics.jsonl),
// one object per line, safe for concurrent writers: the pipeline and spa learn both write with it.
package metrics

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
)

// Log is an open metrics.jsonl.
type Log struct {
	mu sync.Mutex
	f  *os.File
}

// Open opens path for appending, making its directory; an existing file keeps its lines (a
// resumed run continues it).
func Open(path string) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &Log{f: f}, nil
}

// Write appends v as one line. A value JSON cannot hold (NaN in a struct) is an error; maps should
// pass such numbers through Number.
func (l *Log) Write(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.f.Write(append(data, '\n'))
	return err
}

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

// Number is x for JSON: NaN and infinities (no value yet, such as a validation loss without
// validation data) become null.
func Number(x float64) any {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return x
}
