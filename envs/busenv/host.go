// Package busenv puts environments on the bus: a Host serves any envs.Env to remote agents, and
// Remote is an envs.Env that plays whatever host answers, so rollout code cannot tell a remote
// environment from a local one. The wire protocol is in package bus and docs/bus-protocol.md.
package busenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

// HostOptions configure a Host.
type HostOptions struct {
	// Env is the environment name on the bus (spa.env.<Env>.*).
	Env string
	// New makes an environment of a variant; the host calls it once per reset.
	New func(variant string) (envs.Env, error)
	// Variants the host serves; the first is the default for requests that name none. Empty
	// means any variant New accepts, with "" passed through for the default.
	Variants []string
	// SessionTTL drops sessions idle this long; zero means 10 minutes.
	SessionTTL time.Duration
	// MaxSessions bounds live sessions (and so memory); zero means 100,000.
	MaxSessions int
	// ID names this host in its subject; empty picks a unique one.
	ID string
}

// HostStats counts what a host has done.
type HostStats struct {
	Sessions int   `json:"sessions"`
	Resets   int64 `json:"resets"`
	Steps    int64 `json:"steps"`
	Expired  int64 `json:"expired"`
	Errors   int64 `json:"errors"`
}

type session struct {
	mu       sync.Mutex
	env      envs.Env
	done     bool
	lastUsed atomic.Int64 // unix nanoseconds
}

// Host serves one environment on the bus. Resets and specs arrive through a queue group shared
// by every host of the environment; steps arrive on this host's own subject.
type Host struct {
	opts    HostOptions
	nc      *nats.Conn
	subject string
	modes   []envs.RenderMode
	subs    []*nats.Subscription
	stop    chan struct{}
	wg      sync.WaitGroup

	mu       sync.RWMutex
	sessions map[string]*session
	nextID   atomic.Uint64

	resets, steps, expired, errs atomic.Int64
}

// NewHost subscribes a host on nc and starts serving at once.
func NewHost(nc *nats.Conn, opts HostOptions) (*Host, error) {
	if err := bus.CheckName("environment name", opts.Env); err != nil {
		return nil, fmt.Errorf("env host: %w", err)
	}
	if opts.New == nil {
		return nil, fmt.Errorf("env host %s: no environment factory", opts.Env)
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 10 * time.Minute
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 100_000
	}
	if opts.ID == "" {
		opts.ID = strings.ToLower(nuid.Next())
	}
	if err := bus.CheckName("host id", opts.ID); err != nil {
		return nil, fmt.Errorf("env host %s: %w", opts.Env, err)
	}
	// Make one environment now: a factory that cannot build its default variant should fail the
	// host at start, not every reset later.
	probe, err := opts.New(defaultVariant(opts.Variants))
	if err != nil {
		return nil, fmt.Errorf("env host %s: %w", opts.Env, err)
	}
	h := &Host{
		opts:     opts,
		nc:       nc,
		subject:  bus.HostSubject(opts.Env, opts.ID),
		modes:    probe.Spec().RenderModes,
		stop:     make(chan struct{}),
		sessions: map[string]*session{},
	}
	queue := bus.EnvQueue(opts.Env)
	prefix := h.subject + "."
	for _, s := range []struct {
		subject, queue string
		handle         func(*nats.Msg) []byte
	}{
		{bus.EnvSubject(opts.Env, "spec"), queue, func(m *nats.Msg) []byte { return h.handleSpec(m.Data) }},
		{bus.EnvSubject(opts.Env, "reset"), queue, func(m *nats.Msg) []byte { return h.handleReset(m.Data) }},
		{prefix + "*", "", func(m *nats.Msg) []byte { return h.dispatch(strings.TrimPrefix(m.Subject, prefix), m.Data) }},
		{bus.HostsSubject, "", func(*nats.Msg) []byte {
			return mustJSON(bus.HostInfo{Envelope: ok(), Env: h.opts.Env, Host: h.opts.ID, Variants: h.opts.Variants, Sessions: h.Stats().Sessions, Runtime: "go"})
		}},
	} {
		handle := s.handle
		sub, err := nc.QueueSubscribe(s.subject, s.queue, func(m *nats.Msg) {
			if reply := handle(m); m.Reply != "" {
				_ = m.Respond(reply)
			}
		})
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("env host %s: subscribe %s: %w", opts.Env, s.subject, err)
		}
		// Slow consumers drop messages, and a dropped step is a hung client; allow a deep queue.
		_ = sub.SetPendingLimits(1<<20, 1<<30)
		h.subs = append(h.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		h.Close()
		return nil, fmt.Errorf("env host %s: flush subscriptions: %w", opts.Env, err)
	}
	h.wg.Add(1)
	go h.reap()
	return h, nil
}

func defaultVariant(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// Subject is this host's session prefix.
func (h *Host) Subject() string { return h.subject }

// Stats reports the host's counters.
func (h *Host) Stats() HostStats {
	h.mu.RLock()
	n := len(h.sessions)
	h.mu.RUnlock()
	return HostStats{Sessions: n, Resets: h.resets.Load(), Steps: h.steps.Load(), Expired: h.expired.Load(), Errors: h.errs.Load()}
}

// Close unsubscribes and drops every session. Clients of those sessions get host_gone.
func (h *Host) Close() {
	select {
	case <-h.stop:
		return
	default:
	}
	close(h.stop)
	for _, s := range h.subs {
		_ = s.Unsubscribe()
	}
	h.wg.Wait()
	h.mu.Lock()
	h.sessions = map[string]*session{}
	h.mu.Unlock()
}

// reap drops sessions idle longer than the TTL, so abandoned episodes do not pile up.
func (h *Host) reap() {
	defer h.wg.Done()
	tick := time.NewTicker(max(h.opts.SessionTTL/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-tick.C:
			cutoff := now.Add(-h.opts.SessionTTL).UnixNano()
			h.mu.Lock()
			for id, s := range h.sessions {
				if s.lastUsed.Load() < cutoff {
					delete(h.sessions, id)
					h.expired.Add(1)
				}
			}
			h.mu.Unlock()
		}
	}
}

func (h *Host) fail(code, format string, args ...any) []byte {
	h.errs.Add(1)
	return bus.ErrorReply(code, format, args...)
}

// decode parses a request body into v, whose Protocol field it then checks; it returns an error
// reply on failure. One pass over the JSON: this is on every step's path.
func (h *Host) decode(data []byte, v any, protocol *int) []byte {
	if err := json.Unmarshal(data, v); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || !json.Valid(data) {
			return h.fail(bus.CodeBadRequest, "malformed JSON: %v", err)
		}
		return h.fail(bus.CodeBadRequest, "bad request: %v", err)
	}
	switch {
	case *protocol == 0:
		return h.fail(bus.CodeBadRequest, "missing \"protocol\" (this host speaks %d)", bus.EnvProtocol)
	case *protocol != bus.EnvProtocol:
		return h.fail(bus.CodeUnsupportedProtocol, "protocol %d requested; this host speaks %d", *protocol, bus.EnvProtocol)
	}
	return nil
}

// variant resolves the requested variant against the ones this host serves.
func (h *Host) variant(v string) (string, []byte) {
	if len(h.opts.Variants) == 0 {
		return v, nil
	}
	if v == "" {
		return h.opts.Variants[0], nil
	}
	for _, ok := range h.opts.Variants {
		if strings.EqualFold(ok, v) {
			return ok, nil
		}
	}
	return "", h.fail(bus.CodeUnknownVariant, "%s host serves variants %s, not %q", h.opts.Env, strings.Join(h.opts.Variants, ", "), v)
}

func (h *Host) newEnv(variant string) (envs.Env, []byte) {
	env, err := h.opts.New(variant)
	if err != nil {
		return nil, h.fail(bus.CodeUnknownVariant, "%v", err)
	}
	return env, nil
}

func (h *Host) handleSpec(data []byte) []byte {
	var req bus.SpecRequest
	if bad := h.decode(data, &req, &req.Protocol); bad != nil {
		return bad
	}
	v, bad := h.variant(req.Variant)
	if bad != nil {
		return bad
	}
	env, bad := h.newEnv(v)
	if bad != nil {
		return bad
	}
	spec := env.Spec()
	return mustJSON(bus.SpecReply{Envelope: ok(), Spec: &spec})
}

func ok() bus.Envelope { return bus.Envelope{Protocol: bus.EnvProtocol} }

// parseSeed accepts a JSON integer in [0, MaxSeed].
func parseSeed(raw *json.RawMessage) (int64, error) {
	if raw == nil || string(*raw) == "null" {
		return 0, fmt.Errorf("missing \"seed\"")
	}
	s := string(*raw)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
			return 0, fmt.Errorf("seed %s is not an integer in [0, %d]", s, int64(bus.MaxSeed))
		}
		return 0, fmt.Errorf("seed %s is not a number", s)
	}
	if n < 0 || n > bus.MaxSeed {
		return 0, fmt.Errorf("seed %d is outside [0, %d]", n, int64(bus.MaxSeed))
	}
	return n, nil
}

func (h *Host) handleReset(data []byte) []byte {
	var req bus.ResetRequest
	if bad := h.decode(data, &req, &req.Protocol); bad != nil {
		return bad
	}
	seed, err := parseSeed(req.Seed)
	if err != nil {
		return h.fail(bus.CodeBadSeed, "%v", err)
	}
	v, bad := h.variant(req.Variant)
	if bad != nil {
		return bad
	}
	h.mu.RLock()
	full := len(h.sessions) >= h.opts.MaxSessions
	h.mu.RUnlock()
	if full {
		return h.fail(bus.CodeOverloaded, "host %s holds its maximum of %d sessions", h.opts.ID, h.opts.MaxSessions)
	}
	env, bad := h.newEnv(v)
	if bad != nil {
		return bad
	}
	if err := safe(func() error { return env.Reset(seed) }); err != nil {
		return h.fail(bus.CodeInternal, "reset %s seed %d: %v", h.opts.Env, seed, err)
	}
	id := h.opts.ID + "-" + strconv.FormatUint(h.nextID.Add(1), 36)
	s := &session{env: env}
	s.lastUsed.Store(time.Now().UnixNano())
	h.mu.Lock()
	h.sessions[id] = s
	h.mu.Unlock()
	h.resets.Add(1)
	_, explore := env.(envs.Explorer)
	return mustJSON(bus.ResetReply{
		Envelope: ok(), Session: id, Subject: h.subject, Variant: env.Spec().Variant,
		Observation: h.observe(env), TTLMillis: h.opts.SessionTTL.Milliseconds(), Explore: explore,
	})
}

func (h *Host) observe(env envs.Env) bus.Observation {
	obs := make(bus.Observation, len(h.modes))
	for _, m := range h.modes {
		obs[m] = env.Render(m)
	}
	return obs
}

// dispatch routes <host>.<op>.
func (h *Host) dispatch(op string, data []byte) []byte {
	switch op {
	case "step":
		return h.handleStep(data)
	case "close":
		return h.handleClose(data)
	case "explore":
		return h.handleExplore(data)
	}
	return h.fail(bus.CodeUnknownOp, "unknown operation %q (this host answers step, close, explore)", op)
}

func (h *Host) lookup(id string) (*session, []byte) {
	h.mu.RLock()
	s, found := h.sessions[id]
	h.mu.RUnlock()
	if !found {
		return nil, h.fail(bus.CodeUnknownSession, "no session %q on host %s (never started, closed, or idle past its %s TTL)", id, h.opts.ID, h.opts.SessionTTL)
	}
	s.lastUsed.Store(time.Now().UnixNano())
	return s, nil
}

func (h *Host) handleStep(data []byte) []byte {
	var req bus.StepRequest
	if bad := h.decode(data, &req, &req.Protocol); bad != nil {
		return bad
	}
	var action string
	if req.Action == nil || json.Unmarshal(*req.Action, &action) != nil {
		return h.fail(bus.CodeBadAction, "\"action\" must be a JSON string")
	}
	if len(action) > bus.MaxActionBytes {
		return h.fail(bus.CodeBadAction, "action is %d bytes; the limit is %d", len(action), bus.MaxActionBytes)
	}
	if !utf8.ValidString(action) {
		return h.fail(bus.CodeBadAction, "action is not valid UTF-8")
	}
	s, bad := h.lookup(req.Session)
	if bad != nil {
		return bad
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return h.fail(bus.CodeEpisodeDone, "session %s: the episode has ended; reset for a new one", req.Session)
	}
	var st envs.Step
	err := safe(func() (err error) { st, err = s.env.Step(action); return err })
	if err != nil {
		return h.fail(bus.CodeInternal, "step %s: %v", h.opts.Env, err)
	}
	s.done = st.Done
	h.steps.Add(1)
	return mustJSON(bus.StepReply{Envelope: ok(), Step: st, Observation: h.observe(s.env)})
}

func (h *Host) handleClose(data []byte) []byte {
	var req bus.CloseRequest
	if bad := h.decode(data, &req, &req.Protocol); bad != nil {
		return bad
	}
	h.mu.Lock()
	_, found := h.sessions[req.Session]
	delete(h.sessions, req.Session)
	h.mu.Unlock()
	if !found {
		return h.fail(bus.CodeUnknownSession, "no session %q on host %s", req.Session, h.opts.ID)
	}
	return mustJSON(ok())
}

func (h *Host) handleExplore(data []byte) []byte {
	var req bus.ExploreRequest
	if bad := h.decode(data, &req, &req.Protocol); bad != nil {
		return bad
	}
	seed, err := parseSeed(req.Seed)
	if err != nil {
		return h.fail(bus.CodeBadSeed, "%v", err)
	}
	s, bad := h.lookup(req.Session)
	if bad != nil {
		return bad
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))
	return mustJSON(bus.ExploreReply{Envelope: ok(), Action: envs.RandomAction(s.env, rng)})
}

// safe turns a panic in environment code into an error, so one bad environment cannot take the
// host (and every other session on it) down.
func safe(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return bus.ErrorReply(bus.CodeInternal, "encode reply: %v", err)
	}
	return b
}
