package testdeadline

import (
	"testing"
	"time"
)

type fakeT struct {
	testing.TB
	at  time.Time
	set bool
}

func (f fakeT) Deadline() (time.Time, bool) { return f.at, f.set }

func TestRemaining(t *testing.T) {
	for _, tc := range []struct {
		name     string
		t        testing.TB
		min, max time.Duration
	}{
		{"deadline in 10 minutes", fakeT{at: time.Now().Add(10 * time.Minute), set: true}, 9*time.Minute + 29*time.Second, 9*time.Minute + 30*time.Second},
		{"deadline already past", fakeT{at: time.Now().Add(-time.Minute), set: true}, time.Second, time.Second},
		{"no deadline", fakeT{}, fallback, fallback},
	} {
		if got := Remaining(tc.t); got < tc.min || got > tc.max {
			t.Errorf("%s: Remaining = %s, want %s..%s", tc.name, got, tc.min, tc.max)
		}
	}
	ctx, cancel := Context(fakeT{at: time.Now().Add(-time.Minute), set: true})
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > time.Second {
		t.Errorf("Context deadline %v, %v; want within a second", d, ok)
	}
}
