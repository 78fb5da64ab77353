// Package progress draws the progress of long work: one line redrawn in place on a terminal, and
// plain periodic lines in a log file or pipe, where carriage returns and erase codes would pile up
// as garbage.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Line is one stage's progress: done/total, an ETA and the stage's live numbers. It is safe for
// concurrent use.
type Line struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	total    int
	terminal bool
	// every is the least time between two draws: 200 ms on a terminal, LogEvery elsewhere.
	every       time.Duration
	start, last time.Time
	drawn       bool
}

// LogEvery is how often a Line writes to a writer that is not a terminal.
var LogEvery = 30 * time.Second

// New starts a progress line for total units of work; an empty label or a nil writer draws nothing.
func New(w io.Writer, label string, total int) *Line {
	l := &Line{w: w, label: label, total: total, start: time.Now(), every: LogEvery}
	if IsTerminal(w) {
		l.terminal, l.every = true, 200*time.Millisecond
	}
	return l
}

// IsTerminal reports whether w is a character device (a terminal), where a line can be redrawn.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Set reports done units and the stage's current numbers. The first call draws at once and the
// last unit always draws; between them, at most one draw per interval.
func (l *Line) Set(done int, detail string) {
	if l == nil || l.label == "" || l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drawn && time.Since(l.last) < l.every && done != l.total {
		return
	}
	l.last = time.Now()
	eta := ""
	if done > 0 && done < l.total {
		el := time.Since(l.start)
		eta = " eta " + (el / time.Duration(done) * time.Duration(l.total-done)).Round(time.Second).String()
	}
	if l.terminal {
		fmt.Fprintf(l.w, "\r%-22s %d/%d%s  %s\x1b[K", l.label, done, l.total, eta, detail)
	} else {
		fmt.Fprintf(l.w, "%s %d/%d%s  %s\n", l.label, done, l.total, eta, detail)
	}
	l.drawn = true
}

// Done ends the line with the stage's wall time.
func (l *Line) Done() {
	if l == nil || l.label == "" || l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.drawn {
		return
	}
	took := time.Since(l.start).Round(time.Second)
	if l.terminal {
		fmt.Fprintf(l.w, " (%s)\n", took)
	} else {
		fmt.Fprintf(l.w, "%s done in %s\n", l.label, took)
	}
	l.drawn = false
}
