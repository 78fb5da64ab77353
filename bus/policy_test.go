package bus

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func TestPolicySetGetWatch(t *testing.T) {
	b := openEmbedded(t)
	ctx := testCtx(t)
	p, err := OpenPolicies(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(ctx, "run1"); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("get before set: %v", err)
	}
	updates, err := p.Watch(ctx, "run1")
	if err != nil {
		t.Fatal(err)
	}
	v1 := Policy{Version: 1, Model: "spa-v1", WeightDir: "/ckpt/v1"}
	if err := p.Set(ctx, "run1", v1); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-updates:
		if got.Version != 1 || got.Model != "spa-v1" || got.UpdatedAt.IsZero() {
			t.Errorf("watch got %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch saw no update")
	}
	got, err := p.Get(ctx, "run1")
	if err != nil || got.WeightDir != "/ckpt/v1" {
		t.Fatalf("get: %+v, %v", got, err)
	}
	for _, stale := range []int64{1, 0} {
		if err := p.Set(ctx, "run1", Policy{Version: stale, Model: "old"}); !errors.Is(err, ErrStaleVersion) {
			t.Errorf("set version %d over 1: %v", stale, err)
		}
	}
	if err := p.Set(ctx, "run1", Policy{Version: 5, Model: "spa-v5"}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-updates:
		if got.Version != 5 {
			t.Errorf("watch got version %d, want 5", got.Version)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch saw no second update")
	}
	// Other runs are separate keys.
	if _, err := p.Get(ctx, "run2"); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("run2: %v", err)
	}
	for _, bad := range []Policy{{Version: -1, Model: "m"}, {Version: 9}} {
		if err := p.Set(ctx, "run1", bad); err == nil {
			t.Errorf("set %+v accepted", bad)
		}
	}
	if err := p.Set(ctx, "a.b", v1); err == nil {
		t.Error("run id with a dot accepted")
	}
}

// TestPolicySetIsCompareAndSet races many setters: versions never go backwards and the highest
// version wins.
func TestPolicySetIsCompareAndSet(t *testing.T) {
	b := openEmbedded(t)
	ctx := testCtx(t)
	p, err := OpenPolicies(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for v := int64(1); v <= 40; v++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Set(ctx, "race", Policy{Version: v, Model: "m"}); err != nil && !errors.Is(err, ErrStaleVersion) {
				t.Errorf("set %d: %v", v, err)
			}
		}()
	}
	wg.Wait()
	got, err := p.Get(ctx, "race")
	if err != nil || got.Version != 40 {
		t.Fatalf("after the race: %+v, %v; want version 40", got, err)
	}
}
