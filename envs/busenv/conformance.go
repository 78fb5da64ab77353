package busenv

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

//go:embed conformance.json
var conformanceJSON []byte

// conformanceCase is one request of conformance.json.
type conformanceCase struct {
	Name, Op, Body, Code string
	Optional             bool
}

// CheckResult is the outcome of one conformance check; Err is nil when the host passed it.
type CheckResult struct {
	Name string
	// Skipped says why an optional check did not apply (the host does not offer explore).
	Skipped string
	Err     error
}

// Conformance checks that the hosts of env speak the protocol (docs/bus-protocol.md), in any
// language: the spec and a reset are well-formed, a seed always gives the same episode, an
// episode ends within its budget, and every request of conformance.json gets its error code. It
// returns an error only when the checks cannot start (no host answers the spec).
func Conformance(ctx context.Context, nc *nats.Conn, env string, timeout time.Duration) ([]CheckResult, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	c := &conformance{ctx: ctx, nc: nc, env: env, timeout: timeout}
	var spec bus.SpecReply
	if err := c.call(bus.EnvSubject(env, "spec"), `{"protocol":1}`, &spec); err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("no host serves %s on the bus (nothing subscribes to %s)", env, bus.EnvSubject(env, "spec"))
		}
		return nil, fmt.Errorf("spec of %s: %w", env, err)
	}
	var out []CheckResult
	add := func(name string, err error) { out = append(out, CheckResult{Name: name, Err: err}) }
	add("the spec is complete", checkSpec(env, spec))
	if spec.Spec == nil {
		return out, nil
	}
	c.spec = *spec.Spec

	live, err := c.reset(1)
	add("a reset names a session, a subject and every render mode", err)
	if err != nil {
		return out, nil
	}
	add("a seed gives the same episode every time", c.deterministic(7))
	action, err := c.validAction(live)
	add("a valid action is at hand (a spec action, or explore's proposal)", err)
	if err != nil {
		return out, nil
	}
	finished, err := c.reset(2)
	ended := false
	if err == nil {
		ended, err = c.playOut(finished, action)
	}
	switch {
	case err == nil && !ended:
		out = append(out, CheckResult{Name: "an episode ends within its action budget",
			Skipped: fmt.Sprintf("random play did not end an episode in %d steps, so episode_done is not checked", c.playLimit())})
	default:
		add("an episode ends within its action budget", err)
	}

	var file struct{ Cases []conformanceCase }
	if err := json.Unmarshal(conformanceJSON, &file); err != nil {
		return nil, fmt.Errorf("conformance.json: %w", err)
	}
	fill := strings.NewReplacer("{{live}}", live.Session, "{{finished}}", finished.Session,
		"{{action}}", mustString(action), "{{long_action}}", strings.Repeat("x", bus.MaxActionBytes+1))
	for _, tc := range file.Cases {
		// Each session lives on the host that started it; with several hosts they may differ.
		subject := live.Subject + "." + tc.Op
		if strings.Contains(tc.Body, "{{finished}}") {
			subject = finished.Subject + "." + tc.Op
		}
		if tc.Op == "reset" || tc.Op == "spec" {
			subject = bus.EnvSubject(env, tc.Op)
		}
		var reply bus.Envelope
		err := c.call(subject, fill.Replace(tc.Body), &reply)
		var got string
		var ee *bus.EnvError
		switch {
		case errors.As(err, &ee):
			got = ee.Code
		case err != nil:
			add(tc.Name, err)
			continue
		}
		if tc.Code == bus.CodeEpisodeDone && !ended {
			out = append(out, CheckResult{Name: tc.Name, Skipped: "no episode was played to its end"})
			continue
		}
		if tc.Optional && got == bus.CodeUnknownOp {
			out = append(out, CheckResult{Name: tc.Name, Skipped: "the host does not offer explore"})
			continue
		}
		if got != tc.Code {
			add(tc.Name, fmt.Errorf("got %s, want %s (%s)", orSuccess(got), orSuccess(tc.Code), err))
			continue
		}
		add(tc.Name, nil)
	}
	return out, nil
}

func orSuccess(code string) string {
	if code == "" {
		return "success"
	}
	return code
}

func mustString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

type conformance struct {
	ctx     context.Context
	nc      *nats.Conn
	env     string
	timeout time.Duration
	spec    envs.Spec
}

// call sends a raw body and decodes the reply into v; an error reply comes back as *bus.EnvError,
// and a reply without the protocol version is an error of its own.
func (c *conformance) call(subject, body string, v bus.Reply) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, subject, []byte(body))
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, v); err != nil {
		return fmt.Errorf("reply on %s is not protocol JSON (%v): %.200s", subject, err, msg.Data)
	}
	h := v.Header()
	if h.Protocol != bus.EnvProtocol {
		return fmt.Errorf("reply on %s has protocol %d, want %d: %.200s", subject, h.Protocol, bus.EnvProtocol, msg.Data)
	}
	if h.Error != nil {
		if !bus.KnownCode(h.Error.Code) {
			return fmt.Errorf("reply on %s has an error code the protocol does not define: %q", subject, h.Error.Code)
		}
		return h.Error
	}
	return nil
}

func checkSpec(env string, r bus.SpecReply) error {
	s := r.Spec
	var missing []string
	switch {
	case s == nil:
		return errors.New("the reply has no spec")
	case s.Name != env:
		return fmt.Errorf("the spec names %q, not %q", s.Name, env)
	}
	if len(s.Actions) == 0 && s.ActionFormat == "" {
		missing = append(missing, "actions or action_format")
	}
	if s.MaxActions <= 0 {
		missing = append(missing, "max_actions > 0")
	}
	if len(s.RenderModes) == 0 {
		missing = append(missing, "render_modes")
	}
	if s.Instructions == "" {
		missing = append(missing, "instructions")
	}
	if len(missing) > 0 {
		return fmt.Errorf("the spec lacks %s", strings.Join(missing, ", "))
	}
	return nil
}

func (c *conformance) reset(seed int64) (bus.ResetReply, error) {
	var r bus.ResetReply
	if err := c.call(bus.EnvSubject(c.env, "reset"), fmt.Sprintf(`{"protocol":1,"seed":%d}`, seed), &r); err != nil {
		return r, err
	}
	var missing []string
	if r.Session == "" {
		missing = append(missing, "session")
	}
	if r.Subject == "" {
		missing = append(missing, "subject")
	}
	if r.TTLMillis <= 0 {
		missing = append(missing, "ttl_ms")
	}
	for _, m := range c.spec.RenderModes {
		if _, ok := r.Observation[m]; !ok {
			missing = append(missing, "observation."+string(m))
		}
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("the reset reply lacks %s", strings.Join(missing, ", "))
	}
	return r, nil
}

func (c *conformance) close(r bus.ResetReply) error {
	var reply bus.Envelope
	return c.call(r.Subject+".close", fmt.Sprintf(`{"protocol":1,"session":%q}`, r.Session), &reply)
}

func (c *conformance) deterministic(seed int64) error {
	a, err := c.reset(seed)
	if err != nil {
		return err
	}
	b, err := c.reset(seed)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(a.Observation, b.Observation) {
		return fmt.Errorf("seed %d gave two different first observations:\n%v\n%v", seed, a.Observation, b.Observation)
	}
	if err := c.close(a); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return c.close(b)
}

// validAction is the spec's first action, or, for environments whose actions are not names, the
// host's explore proposal.
func (c *conformance) validAction(live bus.ResetReply) (string, error) {
	if len(c.spec.Actions) > 0 {
		return c.spec.Actions[0], nil
	}
	var r bus.ExploreReply
	if err := c.call(live.Subject+".explore", fmt.Sprintf(`{"protocol":1,"session":%q,"seed":1}`, live.Session), &r); err != nil {
		return "", fmt.Errorf("the spec lists no actions and explore failed: %w", err)
	}
	return r.Action, nil
}

func (c *conformance) playLimit() int { return 20*c.spec.MaxActions + 100 }

// playOut steps a session until its episode ends, with the spec's actions in turn or explore's
// proposals, and reports whether it ended. Invalid actions do not use the budget, so it allows many
// more steps than max_actions; random play may still never end a puzzle (a Sudoku with no legal
// move left), which is not a protocol failure.
func (c *conformance) playOut(r bus.ResetReply, fallback string) (bool, error) {
	for i := range c.playLimit() {
		action := fallback
		if n := len(c.spec.Actions); n > 0 {
			action = c.spec.Actions[i%n]
		} else {
			var e bus.ExploreReply
			if err := c.call(r.Subject+".explore", fmt.Sprintf(`{"protocol":1,"session":%q,"seed":%d}`, r.Session, i), &e); err == nil {
				action = e.Action
			}
		}
		var st bus.StepReply
		if err := c.call(r.Subject+".step", fmt.Sprintf(`{"protocol":1,"session":%q,"action":%s}`, r.Session, mustString(action)), &st); err != nil {
			return false, fmt.Errorf("step %d: %w", i+1, err)
		}
		if st.Done {
			return true, nil
		}
	}
	return false, nil
}
