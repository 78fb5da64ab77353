package bus

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spa-rl/spa/internal/testdeadline"
)

func TestSyntheticTrajectoryHasTheAskedSize(t *testing.T) {
	for _, size := range []int{1024, 4096, 65536} {
		data, err := EncodeTrajectory(SyntheticTrajectory("r", "x", size))
		if err != nil {
			t.Fatal(err)
		}
		if d := len(data) - size; d < -64 || d > 64 {
			t.Errorf("asked %d bytes, got %d", size, len(data))
		}
	}
}

func TestTrajectoryValidate(t *testing.T) {
	good := func() *Trajectory { return SyntheticTrajectory("run1", "t1", 1024) }
	cases := []struct {
		name   string
		break_ func(*Trajectory)
		want   string
	}{
		{"good", func(*Trajectory) {}, ""},
		{"schema", func(t *Trajectory) { t.Schema = 2 }, "schema 2"},
		{"id", func(t *Trajectory) { t.ID = "" }, "empty id"},
		{"run", func(t *Trajectory) { t.Run = "a.b" }, "run \"a.b\""},
		{"env", func(t *Trajectory) { t.Env = "" }, "empty env"},
		{"version", func(t *Trajectory) { t.PolicyVersion = -1 }, "policy_version"},
		{"logprobs", func(t *Trajectory) { t.Turns[0].Logprobs = t.Turns[0].Logprobs[1:] }, "logprobs"},
		{"mask", func(t *Trajectory) { t.Turns[0].LossMask[3] = 2 }, "loss_mask[3] = 2"},
		{"valid", func(t *Trajectory) { t.Turns[0].Valid = nil }, "1 actions, 0 validity"},
	}
	for _, tc := range cases {
		tr := good()
		tc.break_(tr)
		err := tr.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	data, _ := EncodeTrajectory(good())
	back, err := DecodeTrajectory(data)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := EncodeTrajectory(back)
	if !bytes.Equal(data, again) {
		t.Error("trajectory does not survive an encode/decode round trip")
	}
	if _, err := DecodeTrajectory([]byte(`{"schema":1,`)); err == nil {
		t.Error("truncated JSON decoded")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func openTCP(t *testing.T, url, name string) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Open(ctx, Options{URL: url, Name: name, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// TestTrajectoriesAcrossARestart publishes 100,000 trajectories from several goroutines while a
// learner-style consumer reads them, restarts the server on the same store in the middle, and
// requires every trajectory exactly once. With -short (the race pass, whose detector made this
// the longest test of the pass: 49 s beside a CPU-bound process) it publishes 20,000: the same
// goroutines, the same restart a third of the way in, the same exactly-once check.
func TestTrajectoriesAcrossARestart(t *testing.T) {
	const (
		publishers = 8
		run        = "restart"
	)
	total := 100_000
	if testing.Short() {
		total = 20_000
	}
	store, addr := t.TempDir(), freeAddr(t)
	srv, err := StartEmbedded(EmbeddedOptions{StoreDir: store, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.ClientURL()
	var srvMu sync.Mutex
	defer func() { srvMu.Lock(); srv.Shutdown(); srvMu.Unlock() }()

	ctx, cancel := testdeadline.Context(t)
	defer cancel()
	pubBus, conBus := openTCP(t, url, "test-publisher"), openTCP(t, url, "test-learner")
	if _, err := EnsureTrajStream(ctx, pubBus.JS, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(pubBus.Conn, PublisherOptions{MaxPending: 2048, AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := NewConsumer(ctx, conBus, run, ConsumerOptions{AckWait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	payload := SyntheticTrajectory(run, "template", 1024)

	var published atomic.Int64
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		for published.Load() < int64(total/3) {
			time.Sleep(time.Millisecond)
		}
		srvMu.Lock()
		defer srvMu.Unlock()
		srv.Shutdown()
		time.Sleep(300 * time.Millisecond)
		srv, err = StartEmbedded(EmbeddedOptions{StoreDir: store, Listen: addr})
		if err != nil {
			t.Errorf("restart: %v", err)
		}
	}()

	var wg sync.WaitGroup
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := *payload
			for i := w; i < total; i += publishers {
				tr.ID = TrajectoryID("w", i)
				if err := pub.Publish(ctx, &tr); err != nil {
					t.Errorf("publish %s: %v", tr.ID, err)
					return
				}
				published.Add(1)
			}
		}()
	}

	seen := make(map[string]int, total)
	consumed := make(chan error, 1)
	go func() {
		for len(seen) < total {
			ds, err := cons.Fetch(ctx, 1000, 500*time.Millisecond)
			if err != nil {
				if ctx.Err() != nil {
					consumed <- err
					return
				}
				time.Sleep(50 * time.Millisecond) // the server is restarting
				continue
			}
			for _, d := range ds {
				seen[d.Traj.ID]++
			}
			for cons.Ack(ctx, ds) != nil && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		consumed <- nil
	}()

	wg.Wait()
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	<-restarted
	if err := <-consumed; err != nil {
		t.Fatalf("consumer: %v (got %d of %d)", err, len(seen), total)
	}
	st := pub.Stats()
	t.Logf("publisher %+v; consumer %+v", st, cons.Stats())
	if st.Published != int64(total) || st.Acked != int64(total) {
		t.Errorf("published %d, acked %d, want %d", st.Published, st.Acked, total)
	}
	dups := 0
	for id, n := range seen {
		if n != 1 {
			dups++
			if dups < 5 {
				t.Errorf("trajectory %s delivered %d times", id, n)
			}
		}
	}
	if len(seen) != total || dups != 0 {
		t.Errorf("consumed %d distinct of %d, %d duplicated", len(seen), total, dups)
	}
	// The stream itself holds each trajectory once: retries were dropped by the id window.
	s, err := pubBus.JS.Stream(ctx, TrajStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(total) {
		t.Errorf("stream holds %d messages, want %d", info.State.Msgs, total)
	}
	if n, _ := cons.Pending(ctx); n != 0 {
		t.Errorf("%d trajectories still pending", n)
	}
}

func TestConsumerResumesWhereItStoppedAndSetsAsideInvalid(t *testing.T) {
	b := openEmbedded(t)
	ctx := testCtx(t)
	if _, err := EnsureTrajStream(ctx, b.JS, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(b.Conn, PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := pub.Publish(ctx, SyntheticTrajectory("r1", TrajectoryID("a", i), 512)); err != nil {
			t.Fatal(err)
		}
	}
	// The same ids again: stored once.
	for i := range 10 {
		if err := pub.Publish(ctx, SyntheticTrajectory("r1", TrajectoryID("a", i), 512)); err != nil {
			t.Fatal(err)
		}
	}
	// Garbage on the subject, as a broken producer in another language might send.
	if _, err := b.JS.Publish(ctx, TrajSubject("r1"), []byte(`{"schema":1,"id":"bad"}`)); err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := pub.Stats(); st.Duplicates != 10 {
		t.Errorf("duplicates = %d, want 10", st.Duplicates)
	}

	c1, err := NewConsumer(ctx, b, "r1", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := c1.Fetch(ctx, 4, time.Second)
	if err != nil || len(first) != 4 {
		t.Fatalf("fetch: %d, %v", len(first), err)
	}
	if err := c1.Ack(ctx, first); err != nil {
		t.Fatal(err)
	}
	// A new consumer with the same durable name starts after the acknowledged ones.
	c2, err := NewConsumer(ctx, b, "r1", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rest, err := c2.Fetch(ctx, 100, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 6 || rest[0].Traj.ID != TrajectoryID("a", 4) {
		t.Fatalf("resumed consumer got %d, first %v", len(rest), rest)
	}
	if st := c2.Stats(); st.Invalid != 1 {
		t.Errorf("invalid = %d, want 1", st.Invalid)
	}
	// Another run's consumer sees nothing of r1.
	other, err := NewConsumer(ctx, b, "r2", ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ds, err := other.Fetch(ctx, 10, 200*time.Millisecond); err != nil || len(ds) != 0 {
		t.Errorf("r2 consumer got %d, %v", len(ds), err)
	}
}

func TestPublisherRefusesOversizedAndClosed(t *testing.T) {
	b := openEmbedded(t)
	ctx := testCtx(t)
	if _, err := EnsureTrajStream(ctx, b.JS, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(b.Conn, PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	big := SyntheticTrajectory("r", "big", int(b.Conn.MaxPayload())+1000)
	if err := pub.Publish(ctx, big); err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("oversized: %v", err)
	}
	bad := SyntheticTrajectory("r", "", 100)
	if err := pub.Publish(ctx, bad); err == nil || !strings.Contains(err.Error(), "empty id") {
		t.Errorf("invalid: %v", err)
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, SyntheticTrajectory("r", "x", 100)); !errors.Is(err, ErrPublisherClosed) {
		t.Errorf("after close: %v", err)
	}
}

// TestPublisherCloseReportsUnacknowledged stops the server under a publisher: Close must say how
// many trajectories are unacknowledged rather than return as if all were stored.
func TestPublisherCloseReportsUnacknowledged(t *testing.T) {
	addr := freeAddr(t)
	srv, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir(), Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	b := openTCP(t, srv.ClientURL(), "pub")
	ctx := testCtx(t)
	if _, err := EnsureTrajStream(ctx, b.JS, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(b.Conn, PublisherOptions{AckTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	for i := range 5 {
		if err := pub.Publish(ctx, SyntheticTrajectory("r", TrajectoryID("z", i), 256)); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err = pub.Close(short)
	if err == nil || !strings.Contains(err.Error(), "5 trajectories unacknowledged") {
		t.Fatalf("close with the server down: %v", err)
	}
	if pub.Stats().Retries == 0 {
		t.Error("no retries counted")
	}
}

func TestExportWritesJSONLines(t *testing.T) {
	b := openEmbedded(t)
	ctx := testCtx(t)
	if _, err := EnsureTrajStream(ctx, b.JS, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, _ := NewPublisher(b.Conn, PublisherOptions{})
	for i := range 2500 {
		run := "ex"
		if i%5 == 0 {
			run = "other"
		}
		if err := pub.Publish(ctx, SyntheticTrajectory(run, TrajectoryID(run, i), 300)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var calls int
	n, err := ExportTrajectories(ctx, b, "ex", &buf, func(done, total uint64) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if n != 2000 || calls < 2 {
		t.Fatalf("exported %d with %d progress calls", n, calls)
	}
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	i := 0
	for sc.Scan() {
		tr, err := DecodeTrajectory(sc.Bytes())
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if tr.Run != "ex" {
			t.Fatalf("line %d is from run %s", i+1, tr.Run)
		}
		i++
	}
	if i != 2000 {
		t.Errorf("%d lines", i)
	}
	if n, err := ExportTrajectories(ctx, b, "nothing", &buf, nil); n != 0 || !errors.Is(err, ErrNoTrajectories) || !strings.Contains(err.Error(), "ex (2000)") {
		t.Errorf("empty run: %d, %v", n, err)
	}
	// Exporting touched no durable consumer.
	s, _ := b.JS.Stream(ctx, TrajStream)
	info, _ := s.Info(ctx)
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left behind", info.State.Consumers)
	}
}

func openEmbedded(t *testing.T) *Bus {
	t.Helper()
	b, err := Open(testCtx(t), Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
