package harness

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// bar draws one stage's progress line: done/total, ETA and the stage's live numbers, at most
// five times a second.
type bar struct {
	mu          sync.Mutex
	w           io.Writer
	label       string
	total       int
	start, last time.Time
	drawn       bool
}

// newBar makes a progress line; an empty label draws nothing.
func newBar(w io.Writer, label string, total int) *bar {
	return &bar{w: w, label: label, total: total, start: time.Now()}
}

func (b *bar) set(done int, detail string) {
	if b.label == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.last) < 200*time.Millisecond && done != b.total {
		return
	}
	b.last = time.Now()
	eta := ""
	if done > 0 && done < b.total {
		el := time.Since(b.start)
		eta = " eta " + (el / time.Duration(done) * time.Duration(b.total-done)).Round(time.Second).String()
	}
	fmt.Fprintf(b.w, "\r%-22s %d/%d%s  %s\x1b[K", b.label, done, b.total, eta, detail)
	b.drawn = true
}

func (b *bar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprintf(b.w, " (%s)\n", time.Since(b.start).Round(time.Second))
		b.drawn = false
	}
}
