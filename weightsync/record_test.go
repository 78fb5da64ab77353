package weightsync

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
)

// okServer takes every version.
type okServer struct{}

func (okServer) Sync(context.Context, Version) error { return nil }
func (okServer) Name() string                        { return "ok" }

// TestFleetRecordsAcrossABusRestart: the NATS server is down when the servers have the new
// version and comes back on the same store 7 s later, after the first write has timed out.
// Within Patience the version is recorded once the bus is back; a version that is not newer
// fails at once, without waiting.
func TestFleetRecordsAcrossABusRestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	store := t.TempDir()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: store, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Options{URL: srv.ClientURL(), Name: "record-test", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pols, err := bus.OpenPolicies(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var said []string
	f := &Fleet{Servers: []Syncer{okServer{}}, Attempts: 1, Patience: 30 * time.Second, Policies: pols, Run: "r",
		Logf: func(format string, args ...any) { said = append(said, format) }}
	if err := f.Sync(ctx, Version{Number: 1, Model: "m-v1"}); err != nil {
		t.Fatal(err)
	}

	srv.Shutdown()
	back := make(chan *bus.Embedded, 1)
	go func() {
		time.Sleep(recordTimeout + 2*time.Second)
		s, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: store, Listen: addr})
		if err != nil {
			t.Error(err)
		}
		back <- s
	}()
	err = f.Sync(ctx, Version{Number: 2, Model: "m-v2"})
	if s := <-back; s != nil {
		defer s.Shutdown()
	}
	if err != nil {
		t.Fatalf("a bus back within Patience: %v", err)
	}
	if len(said) == 0 || !strings.Contains(said[0], "policy bucket") {
		t.Errorf("the retries were announced as %q", said)
	}
	if pol, err := pols.Get(ctx, "r"); err != nil || pol.Version != 2 {
		t.Fatalf("recorded policy %+v, %v; want version 2", pol, err)
	}

	began := time.Now()
	if err := f.Sync(ctx, Version{Number: 2, Model: "m-v2"}); !errors.Is(err, bus.ErrStaleVersion) || time.Since(began) > 5*time.Second {
		t.Errorf("a stale version: %v after %s, want ErrStaleVersion at once", err, time.Since(began))
	}
}
