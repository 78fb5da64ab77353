package api

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spa-rl/spa/inference/wire"
)

// TestSlowBodiesTimeOut: a client that sends headers and then trickles its body loses the
// connection after the body timeout, while a generation that streams longer than that is not cut.
func TestSlowBodiesTimeOut(t *testing.T) {
	g, hs := startServer(t, Options{BodyTimeout: 300 * time.Millisecond})
	g.delay = 3 * time.Millisecond // 150 tokens take longer than the body timeout

	conn, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	start := time.Now()
	var mu sync.Mutex
	go func() {
		// One byte a second, as the probe did; the writes fail once the server hangs up.
		for range 20 {
			time.Sleep(time.Second)
			mu.Lock()
			_, err := conn.Write([]byte(" "))
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	reply, _ := io.ReadAll(conn)
	if !strings.Contains(string(reply), "408") || time.Since(start) > 10*time.Second {
		t.Errorf("after %s the slow body got %q", time.Since(start).Round(time.Millisecond), reply)
	}

	// A completion that runs longer than the body timeout still finishes, streamed or not.
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"prompt":"x","max_tokens":150,"ignore_eos":true,"stream":%v}`, stream)
		resp, err := http.Post(hs.URL+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(data), `"finish_reason":"length"`) {
			t.Errorf("stream %v: %d %.300s", stream, resp.StatusCode, data)
		}
	}
}

// TestEncodingFailuresAreErrors: a value JSON cannot hold is a 500 with an error body, in a
// plain response and in a stream, never an empty 200.
func TestEncodingFailuresAreErrors(t *testing.T) {
	rec := httptest.NewRecorder()
	wire.WriteJSON(rec, map[string]any{"logprob": mathNaN()})
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "encoding the response") {
		t.Errorf("plain: %d %q", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	sse := newSSE(rec)
	sse.send(map[string]any{"ok": 1})
	sse.send(map[string]any{"logprob": mathNaN()})
	sse.send(map[string]any{"ok": 2})
	sse.done()
	events := strings.Split(strings.TrimSpace(rec.Body.String()), "\n\n")
	if len(events) != 3 || !strings.Contains(events[1], `"error"`) || !strings.Contains(events[1], "encoding the response") || events[2] != "data: [DONE]" {
		t.Errorf("stream: %q", rec.Body.String())
	}
	for _, ev := range events {
		if strings.TrimSpace(ev) == "data:" {
			t.Errorf("an empty event: %q", rec.Body.String())
		}
	}
}

func mathNaN() float64 { var zero float64; return zero / zero }
