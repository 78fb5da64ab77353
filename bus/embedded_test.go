package bus

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestEmbeddedRoundTripInProcessAndTCP(t *testing.T) {
	e, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	inproc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer inproc.Close()
	if err := CheckRoundTrip(ctx, inproc); err != nil {
		t.Fatalf("in-process: %v", err)
	}

	url := e.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ClientURL = %q, want a loopback nats URL", url)
	}
	tcp, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if err := CheckRoundTrip(ctx, tcp); err != nil {
		t.Fatalf("tcp: %v", err)
	}
}

func TestEmbeddedWithoutListenerHasNoURL(t *testing.T) {
	e, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if url := e.ClientURL(); url != "" {
		t.Errorf("ClientURL = %q for an in-process-only server", url)
	}
}

func TestStartEmbeddedRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts EmbeddedOptions
		want string
	}{
		{"no store", EmbeddedOptions{}, "StoreDir is required"},
		{"bad listen", EmbeddedOptions{StoreDir: t.TempDir(), Listen: "nonsense"}, "listen"},
		{"bad port", EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:99999"}, "bad port"},
		{"store under a file", EmbeddedOptions{StoreDir: "/dev/null/store"}, "embedded nats: store"},
	} {
		_, err := StartEmbedded(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}
