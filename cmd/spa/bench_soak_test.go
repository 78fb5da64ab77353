package main

import (
	"encoding/json"
	"math"
	"testing"
)

// TestBenchSoakShort runs the soak for a few seconds: real server, bus, env host and consumer;
// it samples, everything published is consumed, and the growth figures are real numbers.
func TestBenchSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the load for seconds")
	}
	code, out, errOut := spa(t, "bench", "soak", "--duration", "8s", "--every", "1s", "--workers", "4", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res soakResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	last := res.Samples[len(res.Samples)-1]
	if len(res.Samples) < 6 || last.Published == 0 || last.RSSMiB <= 0 || last.Goroutines <= 0 {
		t.Fatalf("samples %+v", res.Samples)
	}
	if res.FailedEpisodes != 0 {
		t.Errorf("%d episodes failed", res.FailedEpisodes)
	}
	for _, g := range []float64{res.RSSGrowth, res.GoroutineGrowth} {
		if math.IsNaN(g) || math.IsInf(g, 0) || g <= 0 {
			t.Errorf("growth %v", g)
		}
	}
	if code, _, errOut := spa(t, "bench", "soak", "--duration", "2s", "--every", "1s"); code == 0 {
		t.Errorf("a soak too short for 4 samples ran: %s", errOut)
	}
}
