// Package weightsync puts a trained checkpoint into service on inference servers: one Syncer per
// server kind (spa serve, vLLM with LoRA adapters or an in-place reload, SGLang), and a Fleet that
// updates every server, retries, and records the new policy version on the bus once all of them
// have it. Plain HTTP and no libtorch; the in-process engine's Syncer is inference.Embedded.
package weightsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spa-rl/spa/bus"
)

// Version is a checkpoint to put into service.
type Version struct {
	Number int64
	// Model is the name clients will request it by ("spa-v3").
	Model string
	// Dir is the checkpoint directory (LoRA merged in), as the server sees it.
	Dir string
	// AdapterDir is the PEFT adapter directory of a LoRA run; backends that load adapters use it.
	AdapterDir string
}

// Syncer loads a version into one inference server. The backends below are the servers spa
// works with; each call has a timeout, and a dead server is an error, never a hang.
type Syncer interface {
	Sync(ctx context.Context, v Version) error
	// Name identifies the server in errors and logs.
	Name() string
}

// ErrSyncUnauthorized is a server refusing the admin key; Fleet does not retry it.
var ErrSyncUnauthorized = errors.New("the server refused the key")

// ErrUnreachable marks a sync that got no answer at all (connection refused or reset, a
// timeout): the server is down or restarting, which Fleet.Patience waits out. A server that
// answers with an error is not unreachable.
var ErrUnreachable = errors.New("no answer from the server")

// httpSyncer posts one JSON request and checks the answer.
type httpSyncer struct {
	name, url, key string
	body           func(Version) any
	// check reads a 2xx body for servers that report failure inside it (SGLang's success flag).
	check  func([]byte) error
	client *http.Client
	// inPlace marks servers that replace the weights behind one served name.
	inPlace bool
}

func (h *httpSyncer) Name() string { return h.name }

// InPlace reports whether the server reloads weights under one served name.
func (h *httpSyncer) InPlace() bool { return h.inPlace }

func (h *httpSyncer) Sync(ctx context.Context, v Version) error {
	body, err := post(ctx, h.client, h.url, h.key, h.body(v))
	if err != nil {
		return err
	}
	if h.check != nil {
		return h.check(body)
	}
	return nil
}

// post sends one JSON request to an admin endpoint and returns a 2xx answer's body.
func post(ctx context.Context, client *http.Client, url, key string, payload any) ([]byte, error) {
	data, _ := json.Marshal(payload)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		if !errors.Is(ctx.Err(), context.Canceled) { // a cancelled sync is not the server's silence
			err = fmt.Errorf("%w (%w)", err, ErrUnreachable)
		}
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return nil, fmt.Errorf("%s: %s (check the admin key: --admin-key or server.admin_key): %w", url, resp.Status, ErrSyncUnauthorized)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func newHTTP(name, base, path, key string, body func(Version) any) *httpSyncer {
	return &httpSyncer{name: name, url: adminBase(base) + path, key: key, body: body, client: &http.Client{}}
}

// adminBase is a server's root URL: admin endpoints sit beside /v1, not under it.
func adminBase(base string) string {
	return strings.TrimRight(strings.TrimSuffix(strings.TrimRight(base, "/"), "/v1"), "/")
}

// SpaServer syncs a spa serve over HTTP: POST /update_weights {"weight_dir", "version", "model"}.
func SpaServer(baseURL, adminKey string) Syncer {
	return newHTTP("spa "+baseURL, baseURL, "/update_weights", adminKey, func(v Version) any {
		return map[string]any{"weight_dir": v.Dir, "version": v.Number, "model": v.Model}
	})
}

// VLLMLoRA loads a LoRA adapter into vLLM at run time (vLLM must run with
// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True): POST /v1/load_lora_adapter {"lora_name", "lora_path",
// "load_inplace": true}. Requests then name the adapter as their model.
func VLLMLoRA(baseURL, apiKey string) Syncer {
	return newHTTP("vllm-lora "+baseURL, baseURL, "/v1/load_lora_adapter", apiKey, func(v Version) any {
		dir := v.AdapterDir
		if dir == "" {
			dir = v.Dir
		}
		return map[string]any{"lora_name": v.Model, "lora_path": dir, "load_inplace": true}
	})
}

// VLLMReload reloads full weights into a stock vLLM server in place, through the endpoints vLLM
// serves with VLLM_SERVER_DEV_MODE=1: POST /collective_rpc {"method": "reload_weights", "kwargs":
// {"weights_path": DIR}} makes every worker read the checkpoint's safetensors into the running
// model, then POST /reset_prefix_cache drops the key/value blocks computed with the old weights
// (a cached prefix would otherwise be reused by the next version's requests). Checked against
// vLLM 0.32 on the CPU (docs/interop.md).
func VLLMReload(baseURL, apiKey string) Syncer {
	return &vllmReload{name: "vllm-reload " + baseURL, base: adminBase(baseURL), key: apiKey, client: &http.Client{}}
}

type vllmReload struct {
	name, base, key string
	client          *http.Client
}

func (r *vllmReload) Name() string { return r.name }

// InPlace: vLLM keeps serving the new weights under its one served name.
func (r *vllmReload) InPlace() bool { return true }

func (r *vllmReload) Sync(ctx context.Context, v Version) error {
	rpc := map[string]any{"method": "reload_weights", "kwargs": map[string]string{"weights_path": v.Dir}}
	if _, err := post(ctx, r.client, r.base+"/collective_rpc", r.key, rpc); err != nil {
		return fmt.Errorf("reload %s (is vLLM running with VLLM_SERVER_DEV_MODE=1?): %w", v.Dir, err)
	}
	if _, err := post(ctx, r.client, r.base+"/reset_prefix_cache", r.key, map[string]any{}); err != nil {
		return fmt.Errorf("reloaded %s, but the prefix cache was not reset: %w", v.Dir, err)
	}
	return nil
}

// CheckTargets refuses a sync backend that would serve a model's weights wrongly. vLLM 0.32's in-place
// reload leaves a model with tied embeddings on its old embedding: after two PPO steps vLLM
// answered 1e-4 away from the learner's checkpoint in log-probability, and the gap grows with
// every step, while the same reload of an untied copy matched to 2.5e-6 (docs/interop.md). That
// is silent off-policy drift, so vllm-reload refuses tied models; vllm-lora does not touch the
// embeddings.
func CheckTargets(servers []Syncer, tiedEmbeddings bool) error {
	for _, s := range servers {
		if _, ok := s.(*vllmReload); ok && tiedEmbeddings {
			return fmt.Errorf("%s: the model ties its input and output embeddings (tie_word_embeddings), which vLLM's in-place reload does not update (docs/interop.md); sync with vllm-lora (learner.lora.rank > 0), or start from a checkpoint with untied embeddings", s.Name())
		}
	}
	return nil
}

// SGLang reloads weights from disk: POST /update_weights_from_disk {"model_path"}; SGLang answers
// 200 with {"success": false, "message"} when the load fails, so the body is checked too.
func SGLang(baseURL, apiKey string) Syncer {
	s := newHTTP("sglang "+baseURL, baseURL, "/update_weights_from_disk", apiKey, func(v Version) any {
		return map[string]any{"model_path": v.Dir}
	})
	s.inPlace = true
	s.check = func(body []byte) error {
		var r struct {
			Success *bool  `json:"success"`
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &r) == nil && r.Success != nil && !*r.Success {
			return fmt.Errorf("%s: update failed: %s", s.url, r.Message)
		}
		return nil
	}
	return s
}

// Fleet syncs every server, retrying the ones that fail, and reports any it could not update.
type Fleet struct {
	Servers []Syncer
	// Timeout bounds one attempt on one server; zero means 2 minutes (loading a large model).
	Timeout time.Duration
	// Attempts per server; zero means 3.
	Attempts int
	// Patience keeps retrying a server that gives no answer (ErrUnreachable: down, or restarting
	// mid-run) until this long after the sync began, with the wait between tries growing to 5 s,
	// after its Attempts are spent. A restarted spa serve takes seconds to listen again, vLLM a
	// minute or more. Zero: Attempts alone.
	Patience time.Duration
	// Logf, when set, hears when a server's Attempts are spent and Patience begins, so that a
	// step that waits for a server says why. Calls never overlap.
	Logf func(format string, args ...any)
	// Policies, when set with Run, records the new version in the spa_policy KV bucket once every
	// server has it, which is what tells rollout workers to switch.
	Policies *bus.Policies
	Run      string
}

// SyncError lists the servers a sync could not update.
type SyncError struct {
	Version Version
	Failed  map[string]error
}

func (e *SyncError) Error() string {
	var parts []string
	for name, err := range e.Failed {
		parts = append(parts, fmt.Sprintf("%s: %v", name, err))
	}
	return fmt.Sprintf("sync %s to %d server(s) failed: %s", e.Version.Model, len(e.Failed), strings.Join(parts, "; "))
}

// Sync puts v on every server concurrently. A server that fails is retried with backoff; if some
// still fail, the error names them and the policy version is not published, so no worker asks
// for a model a server lacks.
func (f *Fleet) Sync(ctx context.Context, v Version) error {
	if len(f.Servers) == 0 {
		return errors.New("sync: no servers")
	}
	timeout, attempts := f.Timeout, f.Attempts
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if attempts <= 0 {
		attempts = 3
	}
	began := time.Now()
	var mu sync.Mutex
	failed := map[string]error{}
	var wg sync.WaitGroup
	for _, s := range f.Servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.retry(ctx, began, attempts, timeout, func(ctx context.Context) error { return s.Sync(ctx, v) },
				func(err error) bool { return errors.Is(err, ErrSyncUnauthorized) },
				func(err error) bool { return errors.Is(err, ErrUnreachable) },
				func(err error) {
					mu.Lock() // one server's goroutine at a time: Logf's writer need not be safe
					f.Logf("sync %s: %s gives no answer (%v); waiting up to %s from the sync's start for it to come back", v.Model, s.Name(), err, f.Patience)
					mu.Unlock()
				})
			if err == nil {
				return
			}
			mu.Lock()
			failed[s.Name()] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		return &SyncError{Version: v, Failed: failed}
	}
	if f.Policies != nil {
		if err := f.record(ctx, v, attempts, time.Now()); err != nil {
			return fmt.Errorf("sync %s: servers updated, but the policy version was not recorded: %w", v.Model, err)
		}
	}
	return nil
}

// recordTimeout bounds one write to the policy bucket; on a live server it takes milliseconds.
// Each try needs its own deadline: while the client is reconnecting, a KV call waits for its
// context, which would spend the whole step's.
const recordTimeout = 5 * time.Second

// record writes v to the spa_policy bucket. A failed write is retried like a server that gives no
// answer: the NATS server may be restarting (a JetStream KV call times out until it has recovered
// its streams, which takes longer on a loaded machine), and failing the step here would leave the
// servers ahead of the bus for nothing. A stale version is final: another learner has moved on.
func (f *Fleet) record(ctx context.Context, v Version, attempts int, began time.Time) error {
	pol := bus.Policy{Version: v.Number, Model: v.Model, WeightDir: v.Dir}
	return f.retry(ctx, began, attempts, recordTimeout, func(ctx context.Context) error { return f.Policies.Set(ctx, f.Run, pol) },
		func(err error) bool { return errors.Is(err, bus.ErrStaleVersion) },
		func(error) bool { return true },
		func(err error) {
			f.Logf("sync %s: recording it in the policy bucket failed (%v); retrying up to %s from the servers' update", v.Model, err, f.Patience)
		})
}

// retry calls try, each call bounded by timeout, until it succeeds, fails with an error that is
// final, or has had attempts tries; after those, an error that is patient gets more tries until
// f.Patience has passed since began. The wait between tries grows by 500 ms to 5 s. waiting hears
// (through f.Logf, when set) once, as the patience begins.
func (f *Fleet) retry(ctx context.Context, began time.Time, attempts int, timeout time.Duration, try func(context.Context) error,
	final, patient func(error) bool, waiting func(error)) error {
	var err error
	for a := 0; ; a++ {
		if a > 0 {
			wait := min(time.Duration(a)*500*time.Millisecond, 5*time.Second)
			if a >= attempts && !(patient(err) && time.Since(began)+wait < f.Patience) {
				return err
			}
			if a == attempts && f.Logf != nil {
				waiting(err)
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		err = try(actx)
		cancel()
		if err == nil || final(err) {
			return err
		}
	}
}

// ReloadsInPlace reports whether a backend replaces the weights behind one served name (vLLM
// full reload, SGLang) instead of serving each version under its own name.
func ReloadsInPlace(s Syncer) bool {
	p, ok := s.(interface{ InPlace() bool })
	return ok && p.InPlace()
}

// ModelNamer names versions as the servers will serve them: <prefix>-v<N> where each version gets
// its own name (spa, vLLM LoRA adapters), the one served name <prefix> where servers reload
// weights in place (vLLM full reload, SGLang); rollouts then take the version from the policy KV.
func ModelNamer(prefix string, servers []Syncer) func(int64) string {
	inPlace := len(servers) > 0
	for _, s := range servers {
		inPlace = inPlace && ReloadsInPlace(s)
	}
	if inPlace {
		return func(int64) string { return prefix }
	}
	return func(v int64) string { return bus.VersionName(prefix, v) }
}

// SyncBackends are the names ParseSyncer accepts.
var SyncBackends = []string{"spa", "vllm-lora", "vllm-reload", "sglang"}

// ParseSyncer reads a backend spec "NAME=URL" (spa, vllm-lora, vllm-reload or sglang), as
// `spa learn --sync` takes it; key is the bearer token for the server's admin endpoints.
func ParseSyncer(spec, key string) (Syncer, error) {
	name, url, ok := strings.Cut(spec, "=")
	if !ok || url == "" {
		return nil, fmt.Errorf("sync %q: want BACKEND=URL with BACKEND one of %s", spec, strings.Join(SyncBackends, ", "))
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("sync %q: %q is not an http(s) URL", spec, url)
	}
	switch name {
	case "spa":
		return SpaServer(url, key), nil
	case "vllm-lora":
		return VLLMLoRA(url, key), nil
	case "vllm-reload":
		return VLLMReload(url, key), nil
	case "sglang":
		return SGLang(url, key), nil
	}
	return nil, fmt.Errorf("sync %q: unknown backend %q (want %s)", spec, name, strings.Join(SyncBackends, ", "))
}
