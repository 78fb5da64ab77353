package learner

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/torchrt"
	"github.com/spa-rl/spa/weightsync"
)

// TestSyncEmbeddedServerAndPolicy loads a new checkpoint into a real spa server over HTTP and
// in process, and records the version in the policy KV only after every server has it.
func TestSyncEmbeddedServerAndPolicy(t *testing.T) {
	dirs := make([]string, 3)
	ex := torchrt.NewExecutor()
	defer ex.Close()
	for i := range dirs {
		dirs[i] = t.TempDir()
		tinyCheckpoint(t, ex, dirs[i], uint64(i))
	}
	ctx := context.Background()
	srv, err := inference.Open(ctx, dirs[0], inference.Options{MaxModelLen: 128, KVCacheMB: 16, MaxVersions: 3}, api.Options{AdminKey: "adm"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()
	other, err := inference.Open(ctx, dirs[0], inference.Options{MaxModelLen: 128, KVCacheMB: 16}, api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	b := testBus(t, ctx)
	pols, err := bus.OpenPolicies(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	f := &weightsync.Fleet{Servers: []weightsync.Syncer{weightsync.SpaServer(hs.URL+"/v1", "adm"), inference.Embedded(other.Engine())}, Policies: pols, Run: "r1"}
	if err := f.Sync(ctx, weightsync.Version{Number: 1, Model: "spa-v1", Dir: dirs[1]}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*inference.Engine{srv.Engine(), other.Engine()} {
		if name, _ := e.Resolve("spa"); name != "spa-v1" {
			t.Errorf("latest is %q after the sync", name)
		}
	}
	if p, err := pols.Get(ctx, "r1"); err != nil || p.Version != 1 || p.Model != "spa-v1" {
		t.Errorf("policy %+v %v", p, err)
	}
	// A sync that fails on one server leaves the policy where it was.
	f.Servers = append(f.Servers, weightsync.SpaServer("http://127.0.0.1:1", ""))
	f.Attempts, f.Timeout = 1, time.Second
	if err := f.Sync(ctx, weightsync.Version{Number: 2, Model: "spa-v2", Dir: dirs[2]}); err == nil {
		t.Fatal("sync with a dead server succeeded")
	}
	if p, _ := pols.Get(ctx, "r1"); p.Version != 1 {
		t.Errorf("policy moved to %d despite a failed sync", p.Version)
	}
}
