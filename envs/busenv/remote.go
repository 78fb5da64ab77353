package busenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

// RemoteOptions configure a Remote.
type RemoteOptions struct {
	// Variant is sent with every reset; empty lets the host pick its default.
	Variant string
	// Timeout bounds each request; zero means 10 s. A host that dies mid-episode is reported at
	// once (NATS has no responders for its subject); one that hangs, after Timeout.
	Timeout time.Duration
}

// Remote is an envs.Env played on whichever host answers on the bus. Like every Env it is for one
// goroutine at a time; make one per concurrent episode. Close it to free the host's session.
type Remote struct {
	nc      *nats.Conn
	env     string
	opts    RemoteOptions
	spec    envs.Spec
	session string
	subject string
	obs     bus.Observation
	done    bool
	explore bool
}

var _ interface {
	envs.Env
	envs.Explorer
} = (*Remote)(nil)

// Dial asks a host of env for its spec and returns a Remote ready to Reset.
func Dial(ctx context.Context, nc *nats.Conn, env string, opts RemoteOptions) (*Remote, error) {
	if err := bus.CheckName("environment name", env); err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	r := &Remote{nc: nc, env: env, opts: opts}
	var reply bus.SpecReply
	if err := r.call(ctx, bus.EnvSubject(env, "spec"), bus.SpecRequest{Protocol: bus.EnvProtocol, Variant: opts.Variant}, &reply); err != nil {
		return nil, fmt.Errorf("spec of remote env %s: %w", env, err)
	}
	if reply.Spec == nil {
		return nil, fmt.Errorf("spec of remote env %s: the reply has no spec", env)
	}
	if err := checkSpec(env, reply); err != nil {
		return nil, fmt.Errorf("spec of remote env %s: %w", env, err)
	}
	r.spec = *reply.Spec
	return r, nil
}

// checkObservation requires a host's reply to carry the state in every render mode of the spec,
// each within MaxObservationBytes: a missing or oversized state would reach prompts and
// trajectories silently.
func (r *Remote) checkObservation(obs bus.Observation) error {
	for _, m := range r.spec.RenderModes {
		text, ok := obs[m]
		if !ok {
			return fmt.Errorf("the reply lacks observation.%s (the spec lists render modes %v)", m, r.spec.RenderModes)
		}
		if len(text) > bus.MaxObservationBytes {
			return fmt.Errorf("observation.%s is %d bytes; the limit is %d", m, len(text), bus.MaxObservationBytes)
		}
	}
	return nil
}

// stepWire is a step reply with its fields optional, so that one the host left out is an error
// rather than a silent false or zero.
type stepWire struct {
	bus.Envelope
	Reward      *float64        `json:"reward"`
	Done        *bool           `json:"done"`
	Success     *bool           `json:"success"`
	Valid       *bool           `json:"valid"`
	Observation bus.Observation `json:"observation"`
}

func (w *stepWire) step() (envs.Step, error) {
	var missing []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"reward", w.Reward != nil}, {"done", w.Done != nil}, {"success", w.Success != nil}, {"valid", w.Valid != nil}} {
		if !f.set {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return envs.Step{}, fmt.Errorf("the reply lacks %v", missing)
	}
	return envs.Step{Reward: *w.Reward, Done: *w.Done, Success: *w.Success, Valid: *w.Valid}, nil
}

// call sends one request and decodes the reply, turning transport failures and error replies
// into *bus.EnvError values with the protocol's codes.
func (r *Remote) call(ctx context.Context, subject string, req any, reply bus.Reply) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	msg, err := r.nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders) && r.session == "":
		return &bus.EnvError{Code: bus.CodeUnknownEnv, Message: fmt.Sprintf("no host serves environment %q on the bus (nothing subscribes to %s); start one with 'spa env serve %s'", r.env, subject, r.env)}
	case errors.Is(err, nats.ErrNoResponders):
		return &bus.EnvError{Code: bus.CodeHostGone, Message: fmt.Sprintf("the host of session %s is gone (nothing answers on %s)", r.session, subject)}
	case (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) && r.session != "" && ctx.Err() != nil:
		// A host killed while our request was in flight never answers, just like a hung one;
		// either way the session is lost.
		return &bus.EnvError{Code: bus.CodeHostGone, Message: fmt.Sprintf("the host of session %s did not answer on %s within %s (dead or hung)", r.session, subject, r.opts.Timeout)}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("no answer on %s within %s: %w", subject, r.opts.Timeout, err)
	case err != nil:
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, reply); err != nil {
		return fmt.Errorf("reply on %s is not protocol JSON: %w", subject, err)
	}
	if h := reply.Header(); h.Error != nil {
		return h.Error
	} else if h.Protocol != bus.EnvProtocol {
		return fmt.Errorf("reply on %s speaks protocol %d; spa speaks %d", subject, h.Protocol, bus.EnvProtocol)
	}
	return nil
}

// validSubject reports whether s can prefix a host's subjects: NATS tokens without wildcards or
// whitespace.
func validSubject(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}

// Spec is the host's description of the environment.
func (r *Remote) Spec() envs.Spec { return r.spec }

// Session is the current session id, or "" before the first reset.
func (r *Remote) Session() string { return r.session }

// Reset starts a new episode on some host, closing the previous session first.
func (r *Remote) Reset(seed int64) error { return r.ResetContext(context.Background(), seed) }

// ResetContext is Reset with a context.
func (r *Remote) ResetContext(ctx context.Context, seed int64) error {
	r.closeSession()
	raw := json.RawMessage(fmt.Sprint(seed))
	var reply bus.ResetReply
	if err := r.call(ctx, bus.EnvSubject(r.env, "reset"), bus.ResetRequest{Protocol: bus.EnvProtocol, Variant: r.opts.Variant, Seed: &raw}, &reply); err != nil {
		return fmt.Errorf("reset remote %s seed %d: %w", r.env, seed, err)
	}
	if reply.Session == "" || reply.Subject == "" {
		return fmt.Errorf("reset remote %s seed %d: the reply names no session or subject", r.env, seed)
	}
	if !validSubject(reply.Subject) {
		return fmt.Errorf("reset remote %s seed %d: subject %q is not a NATS subject without wildcards", r.env, seed, reply.Subject)
	}
	if err := r.checkObservation(reply.Observation); err != nil {
		return fmt.Errorf("reset remote %s seed %d: %w", r.env, seed, err)
	}
	r.session, r.subject, r.obs, r.done, r.explore = reply.Session, reply.Subject, reply.Observation, false, reply.Explore
	return nil
}

// Step applies an action on the session's host.
func (r *Remote) Step(action string) (envs.Step, error) {
	return r.StepContext(context.Background(), action)
}

// StepContext is Step with a context.
func (r *Remote) StepContext(ctx context.Context, action string) (envs.Step, error) {
	if r.session == "" {
		return envs.Step{}, envs.ErrNotReset
	}
	if r.done {
		return envs.Step{}, envs.ErrEpisodeDone
	}
	raw, _ := json.Marshal(action)
	rm := json.RawMessage(raw)
	var reply stepWire
	if err := r.call(ctx, r.subject+".step", bus.StepRequest{Protocol: bus.EnvProtocol, Session: r.session, Action: &rm}, &reply); err != nil {
		if bus.ErrorCode(err) == bus.CodeEpisodeDone {
			return envs.Step{}, fmt.Errorf("remote %s: %w (%v)", r.env, envs.ErrEpisodeDone, err)
		}
		return envs.Step{}, fmt.Errorf("step remote %s session %s: %w", r.env, r.session, err)
	}
	st, err := reply.step()
	if err == nil {
		err = r.checkObservation(reply.Observation)
	}
	if err != nil {
		return envs.Step{}, fmt.Errorf("step remote %s session %s: %w", r.env, r.session, err)
	}
	r.obs, r.done = reply.Observation, st.Done
	return st, nil
}

// Render returns the state the host sent with its last reply; it costs no round trip.
func (r *Remote) Render(mode envs.RenderMode) string { return r.obs[mode] }

// RandomAction proposes a random action seeded from rng: the host's own proposal when it offers
// explore (Sudoku proposes a move into an empty cell), else one of the spec's action names.
func (r *Remote) RandomAction(rng *rand.Rand) string {
	// Seeds stay within MaxSeed (2^53-1, all low bits), the range every host reads exactly.
	seed := rng.Uint64() & bus.MaxSeed
	if r.session != "" && r.explore {
		var reply bus.ExploreReply
		raw := json.RawMessage(strconv.FormatUint(seed, 10))
		err := r.call(context.Background(), r.subject+".explore", bus.ExploreRequest{Protocol: bus.EnvProtocol, Session: r.session, Seed: &raw}, &reply)
		if err == nil {
			return reply.Action
		}
	}
	if len(r.spec.Actions) == 0 {
		return ""
	}
	return r.spec.Actions[seed%uint64(len(r.spec.Actions))]
}

// A Remote holds a session on its host, so rollout closes it after each episode.
var _ envs.Closer = (*Remote)(nil)

// Close ends the current session on its host. It is safe to call more than once.
func (r *Remote) Close() error {
	r.closeSession()
	return nil
}

// closeSession frees the host's state without waiting for an answer: a lost close costs the
// host memory until its session TTL, not the agent a round trip per episode.
func (r *Remote) closeSession() {
	if r.session == "" {
		return
	}
	if data, err := json.Marshal(bus.CloseRequest{Protocol: bus.EnvProtocol, Session: r.session}); err == nil {
		_ = r.nc.Publish(r.subject+".close", data)
	}
	r.session, r.subject, r.obs = "", "", nil
}
