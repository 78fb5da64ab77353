package model

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// TestHandlesOutliveTheirCalls passes temporary scalars to libtorch while the garbage collector
// runs without pause. gotch hands libtorch only the C handle, so without the runtime.KeepAlive
// that tools/gotchpatch adds, a finalizer can free a scalar during the call that reads it; a
// spa serve process died that way under load (docs/build.md).
func TestHandlesOutliveTheirCalls(t *testing.T) {
	lockThread(t)
	if testing.Short() {
		t.Skip("a stress loop")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	x := ts.MustOnes([]int64{8}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	for i, end := 0, time.Now().Add(3*time.Second); time.Now().Before(end); i++ {
		y, err := x.AddScalar(ts.FloatScalar(0.5), false)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if v := y.Float64Values()[7]; v != 1.5 {
			t.Fatalf("call %d: 1 + 0.5 = %v", i, v)
		}
		y.MustDrop()
	}
}
