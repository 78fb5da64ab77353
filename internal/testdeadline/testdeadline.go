// Package testdeadline bounds a test's waits by go test's own -timeout instead of a guess.
//
// A wait for work to finish (a training run, a process that must reach a step) that carries its
// own fixed deadline fails on a machine a few times slower, or one loaded by other tests, though
// nothing is wrong. A wait that runs until shortly before the test binary's deadline fails only
// when the work really hangs, and then still with the test's own message and output instead of
// go test's goroutine dump. Checks that something fails fast keep their own bounds.
package testdeadline

import (
	"context"
	"testing"
	"time"
)

// margin is kept back from the binary's deadline for the test to report and clean up.
const margin = 30 * time.Second

// fallback is the bound when go test runs without a deadline (-timeout 0).
const fallback = 10 * time.Minute

// Remaining is how long t may still wait: until margin before the test binary's deadline, at
// least a second.
func Remaining(t testing.TB) time.Duration {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if at, set := d.Deadline(); set {
			return max(time.Until(at)-margin, time.Second)
		}
	}
	return fallback
}

// Context is a context that ends after Remaining(t).
func Context(t testing.TB) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), Remaining(t))
}
