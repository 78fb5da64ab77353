package progress

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestLogLinesArePlain: in a file, progress is whole lines, the first and last unit always, with
// no carriage returns or terminal codes, and at most one line per interval between them.
func TestLogLinesArePlain(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Fatal("a regular file taken for a terminal")
	}
	l := New(f, "sft", 100)
	for i := 1; i <= 100; i++ {
		l.Set(i, "loss 1.0")
	}
	l.Done()
	data, _ := os.ReadFile(f.Name())
	text := string(data)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if strings.ContainsAny(text, "\r\x1b") || len(lines) != 3 || !strings.HasPrefix(lines[0], "sft 1/100 eta") ||
		lines[1] != "sft 100/100  loss 1.0" || !strings.HasPrefix(lines[2], "sft done in ") {
		t.Errorf("log output:\n%q", text)
	}
}

// TestTerminalRedrawsInPlace: on a terminal the line is redrawn with a carriage return and erased
// to its end. A pseudo-terminal is not always available, so this drives the terminal path directly.
func TestTerminalRedrawsInPlace(t *testing.T) {
	var b strings.Builder
	l := New(&b, "ppo", 2)
	l.terminal, l.every = true, time.Hour
	l.Set(1, "x")
	l.Set(2, "y")
	l.Done()
	if got := b.String(); !strings.HasPrefix(got, "\rppo") || !strings.Contains(got, "2/2  y\x1b[K (") || !strings.HasSuffix(got, ")\n") {
		t.Errorf("terminal output: %q", got)
	}
	// Nothing at all for an empty label or a nil writer.
	New(nil, "x", 1).Set(1, "")
	var none strings.Builder
	quiet := New(&none, "", 1)
	quiet.Set(1, "")
	quiet.Done()
	if none.Len() != 0 {
		t.Errorf("an unlabelled line drew %q", none.String())
	}
}
