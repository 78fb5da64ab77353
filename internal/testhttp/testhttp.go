// Package testhttp holds the HTTP helpers that the API's tests and the engine's end-to-end tests
// share: raw JSON in (for vLLM's extra fields, which typed clients cannot send), JSON out.
package testhttp

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Post sends body as JSON to url, decodes the reply into out (unless nil) and returns the status.
func Post(t testing.TB, url, body string, out any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the reply: %v", url, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s: %v: %s", url, err, data)
		}
	}
	return resp.StatusCode
}

// JSON encodes v, for splicing into a request body.
func JSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a test's own literal; failing loudly is the point
	}
	return string(b)
}
