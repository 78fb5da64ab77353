package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spa-rl/spa/internal/testdeadline"
)

// TestRunAgainstExternalServers runs the smoke preset (spa, from the served checkpoint as
// run.model, so without the from-scratch warm-up, exploring with the policy through the servers
// and with the random explorer) with two spa serve processes as the external fleet
// (rollout.endpoints): every evaluated checkpoint and every PPO step reaches both through
// /update_weights under run-prefixed names, episodes are spread over both, the report is
// written, and a resume continues against the same servers from the saved configuration.
func TestRunAgainstExternalServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	model := filepath.Join(dir, "served")
	// spa model init makes the same domain tokenizer as a from-scratch run, so the run's
	// checkpoints pass the servers' tokenizer check.
	// Two layers, as in the clusters: the run's size is what is under test, not the model's.
	if code, _, errOut := spa(t, "model", "init", "--out", model, "--layers", "2"); code != 0 {
		t.Fatal(errOut)
	}
	serve := func(name, addr string) *proc {
		p := startProc(t, name, "serve", "--model", model, "--listen", addr, "--threads", "1", "--admin-key", "adm",
			"--set", "server.max_model_len=2048", "--set", "server.kv_cache_mb=128", "--set", "server.max_versions=3")
		p.waitOutput(t, "spa serve: ", testdeadline.Remaining(t))
		return p
	}
	var endpoints []string
	var servers []*proc
	for i := range 2 {
		addr := freePort(t)
		servers = append(servers, serve("serve"+strconv.Itoa(i), addr))
		endpoints = append(endpoints, "http://"+addr+"/v1")
	}
	runDir := filepath.Join(dir, "runs")
	// A server that is not there stops the run before anything is trained.
	dead := "http://" + freePort(t) + "/v1"
	if code, _, errOut := spa(t, "run", "--preset", "smoke", "--model", model, "--endpoint", endpoints[0]+","+dead,
		"--run-dir", runDir, "--run-id", "dead"); code == 0 || !strings.Contains(errOut, dead+" does not answer") {
		t.Errorf("a dead endpoint: %d\n%s", code, tail(errOut, 2000))
	}
	run := startProc(t, "run", "run", "--preset", "smoke", "--compare", "spa", "--model", model, "--endpoint", strings.Join(endpoints, ","),
		"--run-dir", runDir, "--run-id", "ext", "--set", "server.admin_key=adm", "--set", "run.explore=mix")
	// When PPO starts (the first server holds ext-spa-v0), that server is killed. The first
	// step's sync finds it gone and waits (learner.sync_patience); only when the run says so is
	// the server started again on its port, with its own model only. The sync then gives it
	// ext-spa-v1; episodes that asked it for ext-spa-v0 meanwhile moved to the other server.
	for !slices.Contains(modelIDs(t, endpoints[0]), "ext-spa-v0") {
		select {
		case <-run.done:
			t.Fatalf("spa run ended (%v) before PPO began:\n%s", run.err, tail(run.out.String(), 4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	before := metric(t, strings.TrimSuffix(endpoints[0], "/v1")+"/metrics", "spa_generated_tokens_total")
	servers[0].kill()
	run.waitOutput(t, "gives no answer", testdeadline.Remaining(t))
	servers[0] = serve("serve0-restarted", strings.TrimSuffix(strings.TrimPrefix(endpoints[0], "http://"), "/v1"))
	if err := run.wait(testdeadline.Remaining(t)); err != nil {
		t.Fatalf("spa run against %v, one restarted mid-run: %v\n%s", endpoints, err, tail(run.out.String(), 6000))
	}
	errOut := run.out.String()
	if !strings.Contains(errOut, "external: ") || strings.Contains(errOut, "embedded: ") {
		t.Errorf("the run did not say it used the external servers:\n%s", tail(errOut, 2000))
	}
	report, err := os.ReadFile(filepath.Join(runDir, "ext", "report.md"))
	if err != nil {
		t.Errorf("no report: %v", err)
	}
	if want := "Model: pretrained " + model + " (Qwen2ForCausalLM: 2 layers"; !strings.Contains(string(report), want) || !strings.Contains(string(report), "served by external servers "+endpoints[0]) {
		t.Errorf("the report does not name the model (%q) and the servers:\n%.1500s", want, report)
	}
	// Both servers hold the last PPO version and the final evaluation's under the run's names
	// (the restarted one got them from syncs that waited for it), and both served episodes
	// (the first one before its restart).
	for i, url := range endpoints {
		ids := modelIDs(t, url)
		if !slices.Contains(ids, "ext-spa-v2") || !slices.Contains(ids, "ext-spa-eval-final-v0") {
			t.Errorf("%s serves %v, not the run's last version ext-spa-v2 and ext-spa-eval-final-v0", url, ids)
		}
		n := before
		if i > 0 {
			n = metric(t, strings.TrimSuffix(url, "/v1")+"/metrics", "spa_generated_tokens_total")
		}
		if n == 0 {
			t.Errorf("%s generated no tokens: the episodes were not spread over both servers", url)
		}
	}
	// The run's config.json keeps the endpoints but not the admin key; a resume reads the one and
	// takes the other from its own flags again, and finds every stage done.
	saved, _ := os.ReadFile(filepath.Join(runDir, "ext", "config.json"))
	if strings.Contains(string(saved), `"adm"`) || !strings.Contains(string(saved), endpoints[1]) {
		t.Errorf("config.json holds the admin key or lacks the endpoints:\n%s", saved)
	}
	code, _, errOut := spa(t, "run", "--resume", filepath.Join(runDir, "ext"), "--set", "server.admin_key=adm")
	if code != 0 || !strings.Contains(errOut, "external: ") {
		t.Errorf("resume: %d\n%s", code, tail(errOut, 3000))
	}
}

// modelIDs lists the models a server's /v1/models names.
func modelIDs(t *testing.T, url string) []string {
	t.Helper()
	var models struct{ Data []struct{ ID string } }
	getJSON(t, url+"/models", &models)
	var ids []string
	for _, m := range models.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

// fresh is a client without a connection pool: ports come and go between the process tests, and
// a pooled connection to an earlier test's server on the same port reads as "connection reset".
var fresh = &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := fresh.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// metric reads one unlabelled Prometheus value.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := fresh.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("%s has no %s", url, name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
