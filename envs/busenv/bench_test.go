package busenv

import (
	"testing"

	"github.com/spa-rl/spa/envs"
)

// BenchmarkStepRoundTrip times one remote Step (in-process connections, Sokoban 6x6); resets
// between episodes are not timed. 'spa bench bus' reports the same path as percentiles.
func BenchmarkStepRoundTrip(b *testing.B) {
	e, nc := startBus(b)
	hostConn, err := e.Connect()
	if err != nil {
		b.Fatal(err)
	}
	defer hostConn.Close()
	h, err := NewHost(hostConn, HostOptions{Env: "sokoban", New: func(v string) (envs.Env, error) { return envs.New("sokoban", v) }})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	r, err := Dial(b.Context(), nc, "sokoban", RemoteOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Reset(0); err != nil {
		b.Fatal(err)
	}
	actions := r.Spec().Actions
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := r.Step(actions[i%len(actions)])
		if err != nil {
			b.Fatal(err)
		}
		if st.Done {
			b.StopTimer()
			if err := r.Reset(int64(i)); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}
