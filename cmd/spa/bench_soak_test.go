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

func TestRSSSlope(t *testing.T) {
	for _, tc := range []struct {
		name string
		rss  []float64 // one sample every 10 s
		want float64
	}{
		{"flat", []float64{500, 500, 500, 500}, 0},
		{"1 MiB per 10 s", []float64{500, 501, 502, 503}, 0.1},
		{"noise around flat", []float64{500, 502, 500, 502}, 0.04},
		{"one sample", []float64{500}, 0},
	} {
		var ss []soakSample
		for i, r := range tc.rss {
			ss = append(ss, soakSample{Seconds: float64(10 * i), RSSMiB: r})
		}
		if got := rssSlope(ss); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: slope %g MiB/s, want %g", tc.name, got, tc.want)
		}
	}
}
