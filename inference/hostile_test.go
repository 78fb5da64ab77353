package inference

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/inference/wire"
	"github.com/spa-rl/spa/internal/testhttp"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/domain"
	"github.com/spa-rl/spa/torchrt"
)

// hostileCase is one entry of testdata/hostile/http.json.
type hostileCase struct {
	Issue  int
	Name   string
	Method string
	Path   string
	Body   string
	Repeat *struct {
		Prefix, Unit, Suffix string
		Count                int
	}
	Status  int
	Type    string
	Param   string
	Message string
}

func (c hostileCase) body(dirs map[string]string) string {
	if c.Repeat != nil {
		return c.Repeat.Prefix + strings.Repeat(c.Repeat.Unit, c.Repeat.Count) + c.Repeat.Suffix
	}
	b := c.Body
	for name, dir := range dirs {
		b = strings.ReplaceAll(b, "{{dir:"+name+"}}", testhttp.JSON(dir))
	}
	return b
}

// copyDir copies a checkpoint directory.
func copyDir(t *testing.T, src, dst string) string {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// hostileFixtures makes the checkpoints the cases name: under root (the server's weights_root),
// each a copy of a valid checkpoint broken one way, and one outside it.
func hostileFixtures(t *testing.T, root string) map[string]string {
	t.Helper()
	valid := servedCheckpoint(t, 99)
	dirs := map[string]string{}
	fixture := func(name string, breakIt func(dir string)) {
		dir := copyDir(t, valid, filepath.Join(root, name))
		if breakIt != nil {
			breakIt(dir)
		}
		dirs[name] = dir
	}
	fixture("good", nil)
	fixture("good2", nil)
	fixture("nan", func(dir string) {
		path := filepath.Join(dir, "model.safetensors")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		start := 8 + int(binary.LittleEndian.Uint64(data))
		for i := start; i < len(data); i++ {
			data[i] = 0xFF // every float32 is then a NaN
		}
		os.WriteFile(path, data, 0o644)
	})
	fixture("escape", func(dir string) {
		os.Remove(filepath.Join(dir, "model.safetensors"))
		os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), []byte(`{"weight_map":{"model.embed_tokens.weight":"../../../../etc/passwd"}}`), 0o644)
	})
	fixture("fifo", func(dir string) {
		os.Remove(filepath.Join(dir, "model.safetensors"))
		if err := syscall.Mkfifo(filepath.Join(dir, "model.safetensors"), 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
	})
	fixture("othertok", func(dir string) {
		path := filepath.Join(dir, "tokenizer.json")
		var tok map[string]any
		data, _ := os.ReadFile(path)
		if err := json.Unmarshal(data, &tok); err != nil {
			t.Fatal(err)
		}
		tok["truncation"] = map[string]any{"max_length": 7, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}
		data, _ = json.Marshal(tok)
		os.WriteFile(path, data, 0o644)
	})
	fixture("reformatted", func(dir string) {
		path := filepath.Join(dir, "tokenizer.json")
		var tok map[string]any
		data, _ := os.ReadFile(path)
		if err := json.Unmarshal(data, &tok); err != nil {
			t.Fatal(err)
		}
		data, _ = json.MarshalIndent(tok, "", "    ") // the same tokenizer, other bytes
		os.WriteFile(path, data, 0o644)
	})
	fixture("bigvocab", func(dir string) { initCheckpoint(t, dir, 5, 100) })
	outside := copyDir(t, valid, filepath.Join(t.TempDir(), "outside"))
	dirs["outside"] = outside
	link := filepath.Join(root, "link")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	dirs["link"] = link
	return dirs
}

func saveRandom(t *testing.T, dir string, cfg model.Config, seed uint64) {
	t.Helper()
	ex := torchrt.NewExecutor()
	defer ex.Close()
	if err := ex.Do(context.Background(), func() error {
		m, err := model.New(cfg, model.Options{Seed: seed})
		if err != nil {
			return err
		}
		defer m.Close()
		return model.Save(dir, m, model.SaveOptions{})
	}); err != nil {
		t.Fatal(err)
	}
}

// initCheckpoint writes a random testConfig model with the domain tokenizer (vocabulary 320) and
// extra ids past the tokenizer's.
func initCheckpoint(t *testing.T, dir string, seed uint64, extra int) {
	t.Helper()
	ex := torchrt.NewExecutor()
	defer ex.Close()
	if err := ex.Do(context.Background(), func() error {
		_, _, err := model.Init(dir, model.InitOptions{Tokenizer: domain.Options{VocabSize: 320, Seeds: 3}, Seed: seed,
			Adjust: func(c *model.Config) {
				vocab, eos := c.VocabSize, c.EOSTokenID
				*c = testConfig()
				c.VocabSize, c.EOSTokenID = vocab+extra, eos
			}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHostileRequests sends the committed adversarial requests over real HTTP: each gets its
// expected status and OpenAI-shaped error, and the server serves normally after every one.
func TestHostileRequests(t *testing.T) {
	data, err := os.ReadFile("testdata/hostile/http.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Cases []hostileCase }
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dirs := hostileFixtures(t, root)
	s, hs := startServer(t, api.Options{WeightsRoot: root, MaxRequestSeqs: 64})
	for _, c := range file.Cases {
		method := c.Method
		if method == "" {
			method = "POST"
		}
		req, _ := http.NewRequest(method, hs.URL+c.Path, strings.NewReader(c.body(dirs)))
		req.Header.Set("Content-Type", "application/json")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			cancel()
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		var e struct {
			Error *wire.Error `json:"error"`
		}
		decodeErr := json.Unmarshal(body, &e)
		switch {
		case resp.StatusCode != c.Status:
			t.Errorf("%s (issue 22 item %d): status %d, want %d: %.300s", c.Name, c.Issue, resp.StatusCode, c.Status, body)
		case c.Status >= 400 && (decodeErr != nil || e.Error == nil):
			t.Errorf("%s: error body is not OpenAI-shaped: %.300s", c.Name, body)
		case c.Status >= 400 && (c.Type != "" && e.Error.Type != c.Type || e.Error.Param != c.Param || !strings.Contains(e.Error.Message, c.Message) || e.Error.Code == nil):
			t.Errorf("%s: error %+v, want type %q param %q message containing %q", c.Name, e.Error, c.Type, c.Param, c.Message)
		}
		if strings.Contains(string(body), "root:x:0") {
			t.Errorf("%s: the reply shows a file from outside the checkpoint: %.300s", c.Name, body)
		}
		var ok wire.CompletionResponse
		if code := testhttp.Post(t, hs.URL+"/v1/completions", `{"prompt":"x","max_tokens":2}`, &ok); code != 200 || len(ok.Choices) != 1 {
			t.Fatalf("after %q the server does not serve: %d", c.Name, code)
		}
	}
	// Versions are listed once each, by name, without paths on the server's disk.
	var models struct {
		Data []map[string]any `json:"data"`
	}
	resp, err := http.Get(hs.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&models)
	resp.Body.Close()
	seen := map[string]bool{}
	for _, m := range models.Data {
		id := fmt.Sprint(m["id"])
		if seen[id] {
			t.Errorf("/v1/models lists %s twice", id)
		}
		seen[id] = true
		if root := fmt.Sprint(m["root"]); strings.Contains(root, "/") {
			t.Errorf("/v1/models shows a path: %v", m)
		}
	}
	if !seen["spa-v7"] || len(s.Engine().Versions()) != 2 {
		t.Errorf("versions after the cases: %v", seen)
	}
}

// TestQueueIsBounded: while paused, requests queue up to server.max_waiting; the next is a 429
// that OpenAI clients retry, and the queued ones finish once resumed.
func TestQueueIsBounded(t *testing.T) {
	s, err := Open(context.Background(), servedCheckpoint(t, 3), Options{Name: "spa", MaxBatch: 8, MaxModelLen: 192, KVCacheMB: 64, MaxWaiting: 40}, api.Options{MaxRequestSeqs: 32})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	s.Engine().Pause()
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			var r wire.CompletionResponse
			codes <- testhttp.Post(t, hs.URL+"/v1/completions", `{"prompt":[[5],[6]],"n":10,"max_tokens":2}`, &r)
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Engine().QueueRoom() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var e struct{ Error wire.Error }
	if code := testhttp.Post(t, hs.URL+"/v1/completions", `{"prompt":"x","max_tokens":2}`, &e); code != 429 || e.Error.Type != "RateLimitError" || !strings.Contains(e.Error.Message, "server.max_waiting") {
		t.Errorf("past the queue bound: %d %+v", code, e.Error)
	}
	s.Engine().Resume()
	for range 2 {
		if code := <-codes; code != 200 {
			t.Errorf("a queued request got %d", code)
		}
	}
}

// TestLoadDeadline: a checkpoint read that hangs fails after server.load_timeout, and a valid load
// right after it succeeds instead of waiting behind it.
func TestLoadDeadline(t *testing.T) {
	s, err := Open(context.Background(), servedCheckpoint(t, 3), Options{Name: "spa", MaxBatch: 8, MaxModelLen: 192, KVCacheMB: 64, LoadTimeout: 500 * time.Millisecond}, api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); s.Close() })
	hang := make(chan struct{})
	defer close(hang)
	stuck := filepath.Join(t.TempDir(), "stuck")
	os.Mkdir(stuck, 0o755)
	read := readCheckpoint
	readCheckpoint = func(dir string) (model.Checkpoint, error) {
		if dir == stuck {
			<-hang
			return model.Checkpoint{}, errors.New("released")
		}
		return read(dir)
	}
	t.Cleanup(func() { readCheckpoint = read })
	var e struct{ Error wire.Error }
	if code := testhttp.Post(t, hs.URL+"/update_weights", `{"weight_dir":`+testhttp.JSON(stuck)+`,"version":1}`, &e); code != 504 || !strings.Contains(e.Error.Message, "server.load_timeout") {
		t.Errorf("hung load: %d %+v", code, e.Error)
	}
	good := servedCheckpoint(t, 5)
	var ok map[string]any
	if code := testhttp.Post(t, hs.URL+"/update_weights", `{"weight_dir":`+testhttp.JSON(good)+`,"version":2}`, &ok); code != 200 {
		t.Errorf("the load after a hung one: %d %v", code, ok)
	}
}
