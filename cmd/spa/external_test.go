package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
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
	if code, _, errOut := spa(t, "model", "init", "--out", model); code != 0 {
		t.Fatal(errOut)
	}
	var endpoints []string
	for i := range 2 {
		addr := freePort(t)
		p := startProc(t, "serve"+strconv.Itoa(i), "serve", "--model", model, "--listen", addr, "--threads", "1", "--admin-key", "adm",
			"--set", "server.max_model_len=2048", "--set", "server.kv_cache_mb=128", "--set", "server.max_versions=3")
		p.waitOutput(t, "spa serve: ", testdeadline.Remaining(t))
		endpoints = append(endpoints, "http://"+addr+"/v1")
	}
	runDir := filepath.Join(dir, "runs")
	// A server that is not there stops the run before anything is trained.
	dead := "http://" + freePort(t) + "/v1"
	if code, _, errOut := spa(t, "run", "--preset", "smoke", "--model", model, "--endpoint", endpoints[0]+","+dead,
		"--run-dir", runDir, "--run-id", "dead"); code == 0 || !strings.Contains(errOut, dead+" does not answer") {
		t.Errorf("a dead endpoint: %d\n%s", code, tail(errOut, 2000))
	}
	code, out, errOut := spa(t, "run", "--preset", "smoke", "--compare", "spa", "--model", model, "--endpoint", strings.Join(endpoints, ","),
		"--run-dir", runDir, "--run-id", "ext", "--set", "server.admin_key=adm", "--set", "run.explore=mix")
	if code != 0 {
		t.Fatalf("spa run against %v: %d\n%s\n%s", endpoints, code, out, tail(errOut, 4000))
	}
	if !strings.Contains(errOut, "external: ") || strings.Contains(errOut, "embedded: ") {
		t.Errorf("the run did not say it used the external servers:\n%s", tail(errOut, 2000))
	}
	report, err := os.ReadFile(filepath.Join(runDir, "ext", "report.md"))
	if err != nil {
		t.Errorf("no report: %v", err)
	}
	if want := "Model: pretrained " + model + " (Qwen2ForCausalLM: 4 layers"; !strings.Contains(string(report), want) || !strings.Contains(string(report), "served by external servers "+endpoints[0]) {
		t.Errorf("the report does not name the model (%q) and the servers:\n%.1500s", want, report)
	}
	// Both servers hold the last PPO version under the run's name and served episodes.
	for _, url := range endpoints {
		var models struct{ Data []struct{ ID string } }
		getJSON(t, url+"/models", &models)
		var ids []string
		for _, m := range models.Data {
			ids = append(ids, m.ID)
		}
		if !strings.Contains(strings.Join(ids, " "), "ext-spa-v2") {
			t.Errorf("%s serves %v, not the run's last version ext-spa-v2", url, ids)
		}
		if n := metric(t, strings.TrimSuffix(url, "/v1")+"/metrics", "spa_generated_tokens_total"); n == 0 {
			t.Errorf("%s generated no tokens: the episodes were not spread over both servers", url)
		}
	}
	// The run's config.json keeps the endpoints but not the admin key; a resume reads the one and
	// takes the other from its own flags again, and finds every stage done.
	saved, _ := os.ReadFile(filepath.Join(runDir, "ext", "config.json"))
	if strings.Contains(string(saved), `"adm"`) || !strings.Contains(string(saved), endpoints[1]) {
		t.Errorf("config.json holds the admin key or lacks the endpoints:\n%s", saved)
	}
	code, _, errOut = spa(t, "run", "--resume", filepath.Join(runDir, "ext"), "--set", "server.admin_key=adm")
	if code != 0 || !strings.Contains(errOut, "external: ") {
		t.Errorf("resume: %d\n%s", code, tail(errOut, 3000))
	}
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
