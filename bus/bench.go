package bus

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// StreamBenchResult is the measured throughput of the trajectory stream.
type StreamBenchResult struct {
	Trajectories  int     `json:"trajectories"`
	Bytes         int     `json:"bytes_each"`
	Publishers    int     `json:"publishers"`
	PublishPerSec float64 `json:"publish_per_sec"`
	ConsumePerSec float64 `json:"consume_per_sec"`
	PublishMBps   float64 `json:"publish_mb_per_sec"`
}

// MeasureStream publishes n trajectories of about size bytes from publishers goroutines (timed
// until the server has acknowledged all of them, encoding included), then consumes them with a
// durable consumer in batches of 1,000 (timed until all are acknowledged, decoding included).
func MeasureStream(ctx context.Context, b *Bus, run string, n, size, publishers int) (StreamBenchResult, error) {
	res := StreamBenchResult{Trajectories: n, Publishers: publishers}
	if _, err := EnsureTrajStream(ctx, b.JS, StreamOptions{}); err != nil {
		return res, err
	}
	pub, err := NewPublisher(b.Conn, PublisherOptions{})
	if err != nil {
		return res, err
	}
	template := SyntheticTrajectory(run, "template", size)
	data, err := EncodeTrajectory(template)
	if err != nil {
		return res, err
	}
	res.Bytes = len(data)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := *template
			for i := w; i < n; i += publishers {
				t.ID = TrajectoryID(run, i)
				if err := pub.Publish(ctx, &t); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := pub.Close(ctx); err != nil {
		return res, err
	}
	select {
	case err := <-errs:
		return res, err
	default:
	}
	el := time.Since(start).Seconds()
	res.PublishPerSec = float64(n) / el
	res.PublishMBps = float64(n*res.Bytes) / el / 1e6

	cons, err := NewConsumer(ctx, b, run, ConsumerOptions{Durable: "bench"})
	if err != nil {
		return res, err
	}
	start = time.Now()
	for got := 0; got < n; {
		ds, err := cons.Fetch(ctx, 1000, time.Second)
		if err != nil {
			return res, err
		}
		if len(ds) == 0 {
			return res, fmt.Errorf("consumer stalled after %d of %d trajectories", got, n)
		}
		if err := cons.Ack(ctx, ds); err != nil {
			return res, err
		}
		got += len(ds)
	}
	res.ConsumePerSec = float64(n) / time.Since(start).Seconds()
	return res, nil
}
