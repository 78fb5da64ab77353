package torchrt

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// ErrClosed is returned by Executor.Do after Close.
var ErrClosed = errors.New("torchrt: executor closed")

// Executor runs functions one at a time on a single goroutine locked to its OS thread, so libtorch's
// thread-local state (grad mode, inference mode) is the same for every call.
type Executor struct {
	work      chan job
	done      chan struct{}
	closeOnce sync.Once
}

type job struct {
	fn     func() error
	result chan error
}

// NewExecutor starts the executor's goroutine.
func NewExecutor() *Executor {
	e := &Executor{work: make(chan job), done: make(chan struct{})}
	started := make(chan struct{})
	go e.loop(started)
	<-started
	return e
}

func (e *Executor) loop(started chan<- struct{}) {
	runtime.LockOSThread()
	// The thread stays locked until the goroutine exits; Go then discards the thread, so no
	// other goroutine inherits its torch state.
	close(started)
	for {
		select {
		case j := <-e.work:
			j.result <- runSafely(j.fn)
		case <-e.done:
			return
		}
	}
}

// runSafely turns a panic in fn (gotch's Must* functions panic) into an error, so one bad call
// does not take the process down.
func runSafely(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("torch work panicked: %v", r)
		}
	}()
	return fn()
}

// Do runs fn on the executor's thread and returns its error. If ctx ends before fn starts, Do
// returns ctx's error; once fn has started it runs to completion, since libtorch calls cannot be
// interrupted.
func (e *Executor) Do(ctx context.Context, fn func() error) error {
	j := job{fn: fn, result: make(chan error, 1)}
	select {
	case e.work <- j:
		return <-j.result
	case <-ctx.Done():
		return ctx.Err()
	case <-e.done:
		return ErrClosed
	}
}

// Close stops the executor after the call in progress, if any.
func (e *Executor) Close() {
	e.closeOnce.Do(func() { close(e.done) })
}
