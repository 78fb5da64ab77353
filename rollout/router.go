package rollout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Router spreads episodes over several servers. Each new episode goes to the least-loaded healthy
// server and stays there for all its turns, so that server's prefix cache holds its history. A
// server whose requests fail (after the client's own retries) is taken out of rotation for a
// back-off that doubles with each failure, and its episode is restarted elsewhere by the worker.
type Router struct {
	servers []*routed
	mu      sync.Mutex
	// MaxBackoff caps the time a failing server stays out; zero means 30 s.
	MaxBackoff time.Duration
}

type routed struct {
	llm      LLM
	name     string
	inflight atomic.Int64
	requests atomic.Int64
	failures atomic.Int64
	episodes atomic.Int64

	downUntil time.Time // guarded by Router.mu
	strikes   int
}

// ServerStats are one server's counters.
type ServerStats struct {
	Name     string `json:"name"`
	Inflight int64  `json:"inflight"`
	Requests int64  `json:"requests"`
	Failures int64  `json:"failures"`
	Episodes int64  `json:"episodes"`
	Down     bool   `json:"down"`
}

// ErrNoServer is returned when every server is out of rotation.
var ErrNoServer = errors.New("no inference server is available")

// NewRouter routes over llms, named for metrics (usually their URLs).
func NewRouter(names []string, llms []LLM) (*Router, error) {
	if len(llms) == 0 || len(names) != len(llms) {
		return nil, fmt.Errorf("router: %d names for %d servers", len(names), len(llms))
	}
	r := &Router{MaxBackoff: 30 * time.Second}
	for i, l := range llms {
		r.servers = append(r.servers, &routed{llm: l, name: names[i]})
	}
	return r, nil
}

// Stats reports every server's counters.
func (r *Router) Stats() []ServerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := make([]ServerStats, len(r.servers))
	for i, s := range r.servers {
		out[i] = ServerStats{Name: s.name, Inflight: s.inflight.Load(), Requests: s.requests.Load(), Failures: s.failures.Load(), Episodes: s.episodes.Load(), Down: now.Before(s.downUntil)}
	}
	return out
}

// Episode picks a server for a new episode and returns an LLM bound to it.
func (r *Router) Episode() (LLM, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var best *routed
	for _, s := range r.servers {
		if now.Before(s.downUntil) {
			continue
		}
		if best == nil || s.inflight.Load() < best.inflight.Load() {
			best = s
		}
	}
	if best == nil {
		return nil, ErrNoServer
	}
	best.episodes.Add(1)
	return &sticky{r: r, s: best}, nil
}

// sticky is an episode's LLM: every turn goes to the same server.
type sticky struct {
	r *Router
	s *routed
}

func (e *sticky) Generate(ctx context.Context, req GenRequest) (GenResponse, error) {
	e.s.inflight.Add(1)
	e.s.requests.Add(1)
	resp, err := e.s.llm.Generate(ctx, req)
	e.s.inflight.Add(-1)
	if errors.Is(err, ErrUnauthorized) {
		// The key is wrong for every server alike: no backoff, no other server to try.
		return resp, err
	}
	if err != nil && ctx.Err() == nil {
		e.r.fail(e.s)
		return resp, &ServerError{Server: e.s.name, Err: err}
	}
	if err == nil {
		e.r.ok(e.s)
	}
	return resp, err
}

// ServerError marks a failure of the server itself, after which the episode should be restarted
// on another one.
type ServerError struct {
	Server string
	Err    error
}

func (e *ServerError) Error() string { return fmt.Sprintf("server %s: %v", e.Server, e.Err) }
func (e *ServerError) Unwrap() error { return e.Err }

func (r *Router) fail(s *routed) {
	s.failures.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	s.strikes++
	backoff := min(time.Duration(1<<min(s.strikes-1, 10))*500*time.Millisecond, r.MaxBackoff)
	s.downUntil = time.Now().Add(backoff)
}

func (r *Router) ok(s *routed) {
	r.mu.Lock()
	s.strikes = 0
	r.mu.Unlock()
}
