package stack

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/envs/busenv"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/domain"
	"github.com/spa-rl/spa/torchrt"
)

func TestMain(m *testing.M) { torchrt.RunTests(m) }

// TestStartServeClose brings up the whole stack (embedded bus, two Sokoban hosts, a served
// checkpoint on loopback), checks each part answers, and that Close stops them all.
func TestStartServeClose(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "tiny")
	ex := torchrt.NewExecutor()
	defer ex.Close()
	if err := ex.Do(ctx, func() error {
		_, _, err := model.Init(ckpt, model.InitOptions{Tokenizer: domain.Options{VocabSize: 320, Seeds: 3},
			Adjust: func(c *model.Config) { c.NumHiddenLayers, c.HiddenSize, c.IntermediateSize = 1, 32, 64 }})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s, err := Start(ctx, Options{Bus: bus.Options{StoreDir: filepath.Join(dir, "nats")}, Env: "sokoban", Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Hosts) != 2 || s.Policies == nil || s.Publisher == nil {
		t.Fatalf("started %d hosts, policies %v, publisher %v", len(s.Hosts), s.Policies != nil, s.Publisher != nil)
	}
	hosts, err := busenv.ListHosts(ctx, s.Bus.Conn, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 {
		t.Errorf("%d hosts answer on the bus, want 2", len(hosts))
	}
	if err := s.Serve(ctx, ckpt, inference.Options{MaxModelLen: 64, KVCacheMB: 8}, api.Options{}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.BaseURL + "/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/v1/models: %s", resp.Status)
	}
	s.Close()
	if !s.Bus.Conn.IsClosed() {
		t.Error("the bus is still connected after Close")
	}
	if _, err := http.Get(s.BaseURL + "/models"); err == nil {
		t.Error("the server still answers after Close")
	}
	s.Close() // twice is fine
}

// TestEnvElsewhere: an environment that is not built in is left to hosts elsewhere on the bus.
func TestEnvElsewhere(t *testing.T) {
	s, err := Start(context.Background(), Options{Bus: bus.Options{StoreDir: t.TempDir()}, Env: "corridor-py"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Hosts) != 0 {
		t.Errorf("started %d hosts for an environment spa does not have", len(s.Hosts))
	}
}
