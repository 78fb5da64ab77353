package harness

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/envs"
)

// TestMethodTableMatchesConfig: the names config accepts for run.methods are exactly the method
// table's, and each method's choices are the paper's.
func TestMethodTableMatchesConfig(t *testing.T) {
	field, ok := reflect.TypeFor[config.Run]().FieldByName("Methods")
	if !ok {
		t.Fatal("config has no run.methods")
	}
	accepted := strings.Fields(strings.TrimPrefix(field.Tag.Get("check"), "each="))
	var names []string
	for _, m := range Methods {
		names = append(names, m.Name)
	}
	if !slices.Equal(accepted, names) {
		t.Errorf("config accepts %v, the method table has %v", accepted, names)
	}
	for name, want := range map[string]Method{
		"spa":              {Name: "spa", Render: envs.Coords, WorldModelSFT: true},
		"vanilla":          {Name: "vanilla", Render: envs.Raw},
		"state-estimation": {Name: "state-estimation", Render: envs.Coords},
	} {
		if got, err := MethodNamed(name); err != nil || got != want {
			t.Errorf("%s: %+v, %v", name, got, err)
		}
	}
	if _, err := MethodNamed("ppo"); err == nil {
		t.Error("an unknown method was found")
	}
}

// TestParseExploration: run.explore's names, and an error that lists them.
func TestParseExploration(t *testing.T) {
	for _, s := range []string{"random", "policy", "mix"} {
		if e, err := ParseExploration(s); err != nil || string(e) != s {
			t.Errorf("%q: %q, %v", s, e, err)
		}
	}
	if _, err := ParseExploration("greedy"); err == nil || !strings.Contains(err.Error(), "auto, random, policy, mix") {
		t.Errorf("unknown exploration: %v", err)
	}
	// auto is the paper's choice: the policy when the run starts from a pretrained model.
	for _, tc := range []struct {
		e          Exploration
		pretrained bool
		want       Exploration
	}{{ExploreAuto, true, ExplorePolicy}, {ExploreAuto, false, ExploreRandom}, {ExploreRandom, true, ExploreRandom}, {ExploreMix, false, ExploreMix}} {
		if got := tc.e.For(tc.pretrained); got != tc.want {
			t.Errorf("%s for pretrained %v: %s, want %s", tc.e, tc.pretrained, got, tc.want)
		}
	}
	if e, _ := ParseExploration(""); e != ExploreAuto {
		t.Errorf("empty: %s", e)
	}
}

// TestProbeServer: spa run --endpoint takes spa serve endpoints and says what is wrong with
// others before anything is trained.
func TestProbeServer(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   string // part of the error; empty for none
	}{
		{200, `{"object":"list","data":[{"id":"spa-v0","owned_by":"spa"},{"id":"spa","owned_by":"spa"}]}`, ""},
		{200, `{"object":"list","data":[{"id":"Qwen/Qwen2.5-0.5B","owned_by":"vllm"}]}`, `owned by "vllm", not spa serve`},
		{401, `{"error":{}}`, "server.api_key?"},
		{200, `not json`, "/models:"},
	} {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		}))
		err := probeServer(context.Background(), hs.URL+"/v1", "")
		hs.Close()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%d %s: %v, want %q", tc.status, tc.body, err, tc.want)
		}
	}
}
