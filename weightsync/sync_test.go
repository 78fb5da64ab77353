package weightsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a fake server that checks the documented request shape of one endpoint.
func recorder(t *testing.T, path string, fail int, reply string, check func(map[string]any) error) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.URL.Path != path || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "wrong endpoint "+r.Method+" "+r.URL.Path, 404)
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if err := check(body); err != nil {
			http.Error(w, err.Error(), 422)
			return
		}
		if int(n) <= fail {
			http.Error(w, "busy", 503)
			return
		}
		w.Write([]byte(reply))
	}))
	t.Cleanup(hs.Close)
	return hs, &calls
}

func TestSyncBackendsSendDocumentedRequests(t *testing.T) {
	v := Version{Number: 3, Model: "spa-v3", Dir: "/ckpt/v3"}
	lora, loraCalls := recorder(t, "/v1/load_lora_adapter", 0, `{}`, func(b map[string]any) error {
		if b["lora_name"] != "spa-v3" || b["lora_path"] != "/ckpt/v3" || b["load_inplace"] != true {
			return errors.New("bad lora body")
		}
		return nil
	})
	sg, sgCalls := recorder(t, "/update_weights_from_disk", 1, `{"success": true, "message": "ok"}`, func(b map[string]any) error {
		if b["model_path"] != "/ckpt/v3" {
			return errors.New("bad sglang body")
		}
		return nil
	})
	// vLLM's in-place reload is two calls, in order: the workers' reload, then the prefix cache reset.
	var reloadCalls []string
	full := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		switch r.URL.Path {
		case "/collective_rpc":
			kw, _ := body["kwargs"].(map[string]any)
			if body["method"] != "reload_weights" || kw["weights_path"] != "/ckpt/v3" {
				http.Error(w, "bad rpc body", 422)
				return
			}
			w.Write([]byte(`{"results":[null]}`))
		case "/reset_prefix_cache":
			w.Write([]byte(`{"success":true}`))
		default:
			http.NotFound(w, r)
			return
		}
		reloadCalls = append(reloadCalls, r.URL.Path)
	}))
	defer full.Close()
	f := &Fleet{Servers: []Syncer{VLLMLoRA(lora.URL+"/v1", ""), SGLang(sg.URL, ""), VLLMReload(full.URL+"/v1", "")}, Attempts: 3}
	if err := f.Sync(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if loraCalls.Load() != 1 || sgCalls.Load() != 2 {
		t.Errorf("calls: lora %d, sglang %d (one retry expected)", loraCalls.Load(), sgCalls.Load())
	}
	if strings.Join(reloadCalls, " ") != "/collective_rpc /reset_prefix_cache" {
		t.Errorf("vllm-reload calls: %v", reloadCalls)
	}
	// A vLLM without the dev endpoints answers 404; the error says what to turn on.
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	if err := VLLMReload(plain.URL, "").Sync(context.Background(), v); err == nil || !strings.Contains(err.Error(), "VLLM_SERVER_DEV_MODE=1") {
		t.Errorf("vLLM without dev mode: %v", err)
	}
	// SGLang's 200 with success=false is a failure; a dead server is one too, named in the error.
	bad, _ := recorder(t, "/update_weights_from_disk", 0, `{"success": false, "message": "no such dir"}`, func(map[string]any) error { return nil })
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	f = &Fleet{Servers: []Syncer{SGLang(bad.URL, ""), VLLMLoRA(dead.URL, ""), VLLMLoRA(lora.URL, "")}, Attempts: 2, Timeout: time.Second}
	err := f.Sync(context.Background(), v)
	var se *SyncError
	if !errors.As(err, &se) || len(se.Failed) != 2 || !strings.Contains(err.Error(), "no such dir") || !strings.Contains(err.Error(), "vllm-lora "+dead.URL) {
		t.Errorf("partial failure: %v", err)
	}
	// A hung server costs the timeout per attempt, not forever.
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(1200 * time.Millisecond) }))
	defer hung.Close()
	start := time.Now()
	f = &Fleet{Servers: []Syncer{SpaServer(hung.URL, "")}, Attempts: 1, Timeout: 200 * time.Millisecond}
	if err := f.Sync(context.Background(), v); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("hung server: %v after %s", err, time.Since(start))
	}
}

// TestTiedModelsRefuseVLLMReload: vLLM's in-place reload does not update tied embeddings, so
// the learner refuses that pairing before training, and allows the others.
func TestTiedModelsRefuseVLLMReload(t *testing.T) {
	reload, lora := VLLMReload("http://v:8000", ""), VLLMLoRA("http://v:8000", "")
	for _, c := range []struct {
		servers []Syncer
		tied    bool
		ok      bool
	}{
		{[]Syncer{reload}, true, false},
		{[]Syncer{lora, reload}, true, false},
		{[]Syncer{reload}, false, true},
		{[]Syncer{lora, SpaServer("http://s", "")}, true, true},
	} {
		err := CheckTargets(c.servers, c.tied)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), "tie_word_embeddings")) {
			t.Errorf("tied %v, %d servers: %v", c.tied, len(c.servers), err)
		}
	}
}

// TestReloadsInPlace: vLLM full reload and SGLang keep one served name; spa and vLLM LoRA serve
// each version under its own.
func TestReloadsInPlace(t *testing.T) {
	for spec, want := range map[string]bool{"spa=http://a": false, "vllm-lora=http://a": false, "vllm-reload=http://a": true, "sglang=http://a": true} {
		s, err := ParseSyncer(spec, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := ReloadsInPlace(s); got != want {
			t.Errorf("%s: ReloadsInPlace %v, want %v", spec, got, want)
		}
	}
}

// TestModelNamer: versions get their own names unless every server reloads in place.
func TestModelNamer(t *testing.T) {
	parse := func(specs ...string) []Syncer {
		var out []Syncer
		for _, s := range specs {
			sy, err := ParseSyncer(s, "")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, sy)
		}
		return out
	}
	for _, tc := range []struct {
		servers []Syncer
		want    string
	}{
		{nil, "spa-v3"},
		{parse("spa=http://a"), "spa-v3"},
		{parse("sglang=http://a", "vllm-reload=http://b"), "spa"},
		{parse("sglang=http://a", "spa=http://b"), "spa-v3"},
	} {
		if got := ModelNamer("spa", tc.servers)(3); got != tc.want {
			t.Errorf("%d servers: %q, want %q", len(tc.servers), got, tc.want)
		}
	}
}

// TestFleetPatience: a server that gives no answer (down, restarting) is retried for
// Fleet.Patience and synced once it is back; a server that answers with an error is not waited
// for beyond Attempts, and without Patience an unreachable server fails after Attempts.
func TestFleetPatience(t *testing.T) {
	v := Version{Number: 1, Model: "m-v1", Dir: "/ckpt/1"}
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}

	// The server comes up on its port 3 s after the sync began, after the default 3 attempts
	// (at 0, 0.5 and 1.5 s) have failed.
	addr := free()
	var calls atomic.Int64
	up := make(chan *http.Server, 1)
	go func() {
		time.Sleep(3 * time.Second)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			up <- nil
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1); w.Write([]byte("{}")) })}
		up <- srv
		_ = srv.Serve(l)
	}()
	var said []string
	f := &Fleet{Servers: []Syncer{SpaServer("http://"+addr+"/v1", "")}, Patience: time.Minute,
		Logf: func(format string, args ...any) { said = append(said, fmt.Sprintf(format, args...)) }}
	err := f.Sync(context.Background(), v)
	if srv := <-up; srv != nil {
		defer srv.Close()
	}
	if err != nil || calls.Load() != 1 {
		t.Errorf("a restarting server within Patience: %v, %d calls", err, calls.Load())
	}
	if len(said) != 1 || !strings.Contains(said[0], "gives no answer") || !strings.Contains(said[0], "1m0s") {
		t.Errorf("the wait was announced as %q, want one line naming the server's silence and the patience", said)
	}

	// Without Patience, the same absence fails after Attempts, as unreachable.
	dead := SpaServer("http://"+free()+"/v1", "")
	f = &Fleet{Servers: []Syncer{dead}, Attempts: 2}
	var se *SyncError
	if err := f.Sync(context.Background(), v); !errors.As(err, &se) || !errors.Is(se.Failed[dead.Name()], ErrUnreachable) {
		t.Errorf("an unreachable server without Patience: %v", err)
	}

	// A server that answers, with an error, gets Attempts tries whatever the Patience.
	busy, n := recorder(t, "/update_weights", 1000, "", func(map[string]any) error { return nil })
	f = &Fleet{Servers: []Syncer{SpaServer(busy.URL, "")}, Attempts: 3, Patience: time.Minute}
	if err := f.Sync(context.Background(), v); !errors.As(err, &se) || errors.Is(se.Failed["spa "+busy.URL], ErrUnreachable) || n.Load() != 3 {
		t.Errorf("a server that answers 503: %v after %d tries, want a failure after 3", err, n.Load())
	}
}
