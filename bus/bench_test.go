package bus

import (
	"fmt"
	"testing"
)

// BenchmarkPublish4KiB is the publish side of 'spa bench bus' for go test -bench: b.N
// trajectories of 4 KiB from 4 goroutines into an embedded server's file store.
func BenchmarkPublish4KiB(b *testing.B) {
	bb, err := Open(b.Context(), Options{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	b.ResetTimer()
	r, err := MeasureStream(b.Context(), bb, fmt.Sprintf("bench%d", b.N), b.N, 4096, 4)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(r.PublishPerSec, "traj/s")
	b.ReportMetric(r.ConsumePerSec, "consumed/s")
}
