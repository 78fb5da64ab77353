package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions size the trajectory stream.
type StreamOptions struct {
	// DuplicateWindow is how long JetStream remembers message ids; a publisher retrying after a
	// server restart must land within it. Zero means 10 minutes.
	DuplicateWindow time.Duration
	// MaxBytes and MaxAge bound the stream (oldest dropped first); zero means unlimited.
	MaxBytes int64
	MaxAge   time.Duration
	// Replicas is the JetStream replication factor on a cluster; zero means 1.
	Replicas int
}

// EnsureTrajStream creates the SPA_TRAJ stream or updates it to opts.
func EnsureTrajStream(ctx context.Context, js jetstream.JetStream, opts StreamOptions) (jetstream.Stream, error) {
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = 10 * time.Minute
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        TrajStream,
		Description: "spa trajectories, one subject per run",
		Subjects:    []string{"spa.traj.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  opts.DuplicateWindow,
		MaxBytes:    orUnlimited(opts.MaxBytes),
		MaxAge:      opts.MaxAge,
		Replicas:    opts.Replicas,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", TrajStream, err)
	}
	return s, nil
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	// MaxPending bounds trajectories sent but not yet acknowledged; Publish blocks beyond it, so
	// memory stays bounded when the server stalls. Zero means 4096.
	MaxPending int
	// AckTimeout is how long to wait for the server's acknowledgement before sending again (with
	// the same id, so a late original is not stored twice). Zero means 5 s.
	AckTimeout time.Duration
	// MaxBackoff caps the wait between retries; zero means 2 s.
	MaxBackoff time.Duration
	// OnRetry, if set, is told about each failed attempt (for logs).
	OnRetry func(id string, attempt int, err error)
}

// PublisherStats counts a publisher's work.
type PublisherStats struct {
	Published  int64 `json:"published"`  // accepted by Publish
	Acked      int64 `json:"acked"`      // stored (or found stored) by the server
	Duplicates int64 `json:"duplicates"` // acks that said the id was already stored
	Retries    int64 `json:"retries"`
	Pending    int   `json:"pending"`
}

type pending struct {
	id      string
	msg     *nats.Msg
	fut     jetstream.PubAckFuture
	attempt int
}

// Publisher sends trajectories to the stream with at-least-once delivery and stores each once:
// every message carries the trajectory id as its JetStream message id, unacknowledged messages are
// sent again until the server acknowledges them, and memory is bounded by MaxPending.
type Publisher struct {
	js      jetstream.JetStream
	maxData int64
	opts    PublisherOptions
	// slots holds one token per unacknowledged trajectory: the bound on memory.
	slots chan struct{}
	queue chan *pending
	done  chan struct{}
	// ctx ends the collector's retries when Close gives up.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.RWMutex // held for reading by Publish, for writing by Close
	closed bool

	published, acked, duplicates, retries atomic.Int64
}

// NewPublisher makes a publisher on a connection; callers should EnsureTrajStream first.
func NewPublisher(nc *nats.Conn, opts PublisherOptions) (*Publisher, error) {
	if opts.MaxPending <= 0 {
		opts.MaxPending = 4096
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 5 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(opts.MaxPending+1), jetstream.WithPublishAsyncTimeout(opts.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("trajectory publisher: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{
		js: js, maxData: nc.MaxPayload(), opts: opts,
		slots: make(chan struct{}, opts.MaxPending), queue: make(chan *pending, opts.MaxPending),
		done: make(chan struct{}), ctx: ctx, cancel: cancel,
	}
	go p.collect()
	return p, nil
}

// ErrPublisherClosed is returned by Publish after Close.
var ErrPublisherClosed = errors.New("trajectory publisher closed")

// Publish validates and sends t. It returns once the trajectory is queued for delivery; it blocks
// while MaxPending trajectories await acknowledgement, and returns early only when ctx ends.
// Publish is safe for concurrent use.
func (p *Publisher) Publish(ctx context.Context, t *Trajectory) error {
	data, err := EncodeTrajectory(t)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return p.PublishEncoded(ctx, t.Run, t.ID, data)
}

// PublishEncoded sends an already encoded trajectory of run with message id id.
func (p *Publisher) PublishEncoded(ctx context.Context, run, id string, data []byte) error {
	if int64(len(data)) > p.maxData {
		return fmt.Errorf("publish trajectory %s: %d bytes exceeds the server's max_payload of %d", id, len(data), p.maxData)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrPublisherClosed
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("publish trajectory %s: %w", id, ctx.Err())
	}
	item := &pending{id: id, msg: &nats.Msg{Subject: TrajSubject(run), Data: data, Header: nats.Header{}}}
	item.msg.Header.Set(jetstream.MsgIDHeader, id)
	if err := p.send(ctx, item); err != nil {
		<-p.slots
		// The message may already be stored; publishing it again under the same id stores it once.
		return err
	}
	p.published.Add(1)
	p.queue <- item // never blocks: the queue has a place for every slot
	return nil
}

// send starts an asynchronous publish, retrying with backoff while the client refuses (during a
// reconnect, or while too many publishes are outstanding).
func (p *Publisher) send(ctx context.Context, item *pending) error {
	for {
		// Copy the message: the client keeps a reference to the one it sends.
		m := &nats.Msg{Subject: item.msg.Subject, Data: item.msg.Data, Header: item.msg.Header}
		fut, err := p.js.PublishMsgAsync(m)
		if err == nil {
			item.fut = fut
			return nil
		}
		if err := p.backoff(ctx, item, err); err != nil {
			return err
		}
	}
}

func (p *Publisher) backoff(ctx context.Context, item *pending, cause error) error {
	item.attempt++
	p.retries.Add(1)
	if p.opts.OnRetry != nil {
		p.opts.OnRetry(item.id, item.attempt, cause)
	}
	wait := min(time.Duration(1<<min(item.attempt, 10))*time.Millisecond, p.opts.MaxBackoff)
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish trajectory %s: %w (last error: %v)", item.id, ctx.Err(), cause)
	}
}

// collect waits for acknowledgements in publish order and re-sends what failed. Waiting in order
// is cheap because the server acknowledges in order.
func (p *Publisher) collect() {
	defer close(p.done)
	for item := range p.queue {
	wait:
		for {
			select {
			case ack := <-item.fut.Ok():
				p.acked.Add(1)
				if ack.Duplicate {
					p.duplicates.Add(1)
				}
				break wait
			case err := <-item.fut.Err():
				if p.backoff(p.ctx, item, err) != nil || p.send(p.ctx, item) != nil {
					return // Close gave up
				}
			case <-p.ctx.Done():
				return
			}
		}
		<-p.slots
	}
}

// Stats reports counters; Pending is published minus acknowledged.
func (p *Publisher) Stats() PublisherStats {
	s := PublisherStats{
		Published: p.published.Load(), Acked: p.acked.Load(),
		Duplicates: p.duplicates.Load(), Retries: p.retries.Load(),
	}
	s.Pending = int(s.Published - s.Acked)
	return s
}

// Close stops accepting trajectories and waits until every published one is acknowledged. When
// ctx ends first it returns an error that says how many are unacknowledged: they may be lost,
// and whoever produced them should know.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.queue)
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		n := p.Stats().Pending
		p.cancel()
		<-p.done
		return fmt.Errorf("trajectory publisher: %d trajectories unacknowledged at close: %w", n, ctx.Err())
	}
}

// ConsumerOptions configure a trajectory consumer.
type ConsumerOptions struct {
	// Durable names the consumer; the server remembers its position across restarts of both
	// sides. Empty means "learner".
	Durable string
	// AckWait is how long a fetched trajectory may stay unacknowledged before the server
	// redelivers it; zero means 10 minutes (a learner step on a CPU can take that long).
	AckWait time.Duration
	// MaxAckPending bounds fetched but unacknowledged trajectories; zero means 65,536.
	MaxAckPending int
	// DedupeWindow is how many recently acknowledged stream positions are remembered to drop
	// redeliveries whose first acknowledgement was lost; zero means 1<<20.
	DedupeWindow int
}

// Delivery is one trajectory handed to the learner. Acknowledge it once it is used or saved.
type Delivery struct {
	Traj *Trajectory
	// Seq is the stream position, stable across redeliveries.
	Seq uint64
	msg jetstream.Msg
}

// Consumer reads a run's trajectories through a durable pull consumer with explicit acks.
type Consumer struct {
	cons    jetstream.Consumer
	nc      *nats.Conn
	opts    ConsumerOptions
	timeout time.Duration

	mu    sync.Mutex
	acked map[uint64]struct{}
	order []uint64 // acked positions, oldest first, for eviction

	invalid, redelivered atomic.Int64
}

// NewConsumer creates or resumes the durable consumer of run's trajectories.
func NewConsumer(ctx context.Context, b *Bus, run string, opts ConsumerOptions) (*Consumer, error) {
	if err := CheckName("run", run); err != nil {
		return nil, err
	}
	if opts.Durable == "" {
		opts.Durable = "learner"
	}
	if err := CheckName("consumer name", opts.Durable); err != nil {
		return nil, err
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 10 * time.Minute
	}
	if opts.MaxAckPending <= 0 {
		opts.MaxAckPending = 65536
	}
	if opts.DedupeWindow <= 0 {
		opts.DedupeWindow = 1 << 20
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, TrajStream, jetstream.ConsumerConfig{
		Durable:       run + "-" + opts.Durable,
		Description:   "spa " + opts.Durable + " of run " + run,
		FilterSubject: TrajSubject(run),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		MaxAckPending: opts.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("trajectory consumer %s of run %s: %w", opts.Durable, run, err)
	}
	return &Consumer{cons: cons, nc: b.Conn, opts: opts, timeout: b.timeout, acked: map[uint64]struct{}{}}, nil
}

// ConsumerStats counts what a consumer set aside.
type ConsumerStats struct {
	// Invalid trajectories could not be decoded or failed validation; they are terminated (never
	// redelivered) and counted here.
	Invalid int64 `json:"invalid"`
	// Redelivered counts deliveries of trajectories already acknowledged, dropped silently.
	Redelivered int64 `json:"redelivered"`
}

// Stats reports the consumer's counters.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{Invalid: c.invalid.Load(), Redelivered: c.redelivered.Load()}
}

// Fetch returns up to max trajectories, waiting at most wait for the first; an empty result
// with a nil error means none arrived in time.
func (c *Consumer) Fetch(ctx context.Context, max int, wait time.Duration) ([]Delivery, error) {
	if wait <= 0 {
		wait = time.Second
	}
	batch, err := c.cons.Fetch(max, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, fmt.Errorf("fetch trajectories: %w", err)
	}
	var out []Delivery
	for msg := range batch.Messages() {
		meta, err := msg.Metadata()
		if err != nil {
			_ = msg.Term()
			c.invalid.Add(1)
			continue
		}
		seq := meta.Sequence.Stream
		if c.seen(seq) {
			_ = c.nc.Publish(msg.Reply(), ackBody)
			c.redelivered.Add(1)
			continue
		}
		t, err := DecodeTrajectory(msg.Data())
		if err != nil {
			_ = msg.TermWithReason(err.Error())
			c.invalid.Add(1)
			continue
		}
		out = append(out, Delivery{Traj: t, Seq: seq, msg: msg})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(out) == 0 {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("fetch trajectories: %w", err)
	}
	return out, nil
}

// ackBody is JetStream's positive acknowledgement.
var ackBody = []byte("+ACK")

// inProgressBody is JetStream's "working on it" acknowledgement, which restarts AckWait.
var inProgressBody = []byte("+WPI")

func (c *Consumer) seen(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.acked[seq]
	return ok
}

// Ack acknowledges deliveries and waits until the server has them. The positions are remembered
// first, so a redelivery of these trajectories (an acknowledgement lost to a server restart) is
// dropped rather than handed out twice. Ack can be retried after an error.
func (c *Consumer) Ack(ctx context.Context, ds []Delivery) error {
	c.mu.Lock()
	for _, d := range ds {
		if _, dup := c.acked[d.Seq]; !dup {
			c.acked[d.Seq] = struct{}{}
			c.order = append(c.order, d.Seq)
		}
	}
	// Evict in halves so that the copy is amortised over many acks.
	if over := len(c.order) - c.opts.DedupeWindow; over > c.opts.DedupeWindow {
		for _, s := range c.order[:over] {
			delete(c.acked, s)
		}
		c.order = append(c.order[:0], c.order[over:]...)
	}
	c.mu.Unlock()
	for _, d := range ds {
		// Publish the acknowledgement ourselves: the client's Ack marks a message acknowledged
		// even when the server never got it, and then refuses to send it again on retry.
		if err := c.nc.Publish(d.msg.Reply(), ackBody); err != nil {
			return fmt.Errorf("ack trajectory %s: %w", d.Traj.ID, err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("ack trajectories: flush: %w", err)
	}
	return nil
}

// InProgress tells the server that deliveries are still being worked on, which restarts their
// AckWait; a learner step longer than AckWait sends it so that its batch is not redelivered.
func (c *Consumer) InProgress(ds []Delivery) error {
	for _, d := range ds {
		if err := c.nc.Publish(d.msg.Reply(), inProgressBody); err != nil {
			return fmt.Errorf("trajectory %s in progress: %w", d.Traj.ID, err)
		}
	}
	return nil
}

// AckWait is how long a delivery may stay unacknowledged before the server redelivers it.
func (c *Consumer) AckWait() time.Duration { return c.opts.AckWait }

// Nak hands deliveries back for redelivery (after delay), e.g. when a step fails before using them.
func (c *Consumer) Nak(ds []Delivery, delay time.Duration) error {
	for _, d := range ds {
		if err := d.msg.NakWithDelay(delay); err != nil {
			return fmt.Errorf("nak trajectory %s: %w", d.Traj.ID, err)
		}
	}
	return nil
}

// Pending is the number of trajectories the server holds for this consumer, not yet delivered.
func (c *Consumer) Pending(ctx context.Context) (uint64, error) {
	info, err := c.cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer info: %w", err)
	}
	return info.NumPending, nil
}
