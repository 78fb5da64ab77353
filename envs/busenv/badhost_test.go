package busenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spa-rl/spa/bus"
)

// TestBadHostRepliesAreClearErrors plays against a host that answers wrongly in each way a buggy
// environment can: every case must give the agent an error naming the environment and what is
// wrong, within the timeout, and never a panic or a silently wrong state.
func TestBadHostRepliesAreClearErrors(t *testing.T) {
	_, nc := startBus(t)
	goodSpec := `{"protocol":1,"spec":{"name":"bad","variant":"v","instructions":"play","actions":["A","B"],"max_actions":5,"render_modes":["raw","coords"]}}`
	goodReset := `{"protocol":1,"session":"s1","subject":"spa.env.bad.host.h1","observation":{"raw":"x","coords":"x y"},"ttl_ms":1000}`
	goodStep := `{"protocol":1,"reward":0,"done":false,"success":false,"valid":true,"observation":{"raw":"x","coords":"x y"}}`
	huge := `{"protocol":1,"session":"s1","subject":"spa.env.bad.host.h1","observation":{"raw":"` + strings.Repeat("x", bus.MaxObservationBytes+1) + `","coords":"x"},"ttl_ms":1000}`
	cases := []struct {
		name              string
		spec, reset, step string // "" means no answer at all
		want              string
	}{
		{"the control: a good host", goodSpec, goodReset, goodStep, ""},
		{"a spec that is not JSON", `{"protocol":1,`, goodReset, goodStep, "not protocol JSON"},
		{"a spec of another protocol", `{"protocol":2,"spec":{}}`, goodReset, goodStep, "protocol 2"},
		{"a spec without a spec", `{"protocol":1}`, goodReset, goodStep, "no spec"},
		{"a spec of another environment", strings.Replace(goodSpec, `"name":"bad"`, `"name":"other"`, 1), goodReset, goodStep, `names "other"`},
		{"a spec without a budget", strings.Replace(goodSpec, `"max_actions":5`, `"max_actions":0`, 1), goodReset, goodStep, "max_actions"},
		{"a spec with an unknown error code", `{"protocol":1,"error":{"code":"oops","message":"m"}}`, goodReset, goodStep, "oops"},
		{"a host that never answers the spec", "", goodReset, goodStep, "no answer"},
		{"a reset without a session", goodSpec, `{"protocol":1,"subject":"spa.env.bad.host.h1","observation":{"raw":"x","coords":"x"}}`, goodStep, "no session"},
		{"a reset with a wildcard subject", goodSpec, strings.Replace(goodReset, "spa.env.bad.host.h1", "spa.env.>", 1), goodStep, "wildcards"},
		{"a reset missing a render mode", goodSpec, strings.Replace(goodReset, `,"coords":"x y"`, "", 1), goodStep, "observation.coords"},
		{"a reset with a huge observation", goodSpec, huge, goodStep, "observation.raw is 65537 bytes"},
		{"a reset of another protocol", goodSpec, strings.Replace(goodReset, `"protocol":1`, `"protocol":3`, 1), goodStep, "protocol 3"},
		{"a host that never answers the reset", goodSpec, "", goodStep, "no answer"},
		{"a step without valid", goodSpec, goodReset, strings.Replace(goodStep, `"valid":true,`, "", 1), "lacks [valid]"},
		{"a step without done and reward", goodSpec, goodReset, `{"protocol":1,"success":false,"valid":true,"observation":{"raw":"x","coords":"x"}}`, "lacks [reward done]"},
		{"a step without an observation", goodSpec, goodReset, strings.Replace(goodStep, `,"observation":{"raw":"x","coords":"x y"}`, "", 1), "observation.raw"},
		{"a step that is not JSON", goodSpec, goodReset, `not json`, "not protocol JSON"},
		{"a step with a string reward", goodSpec, goodReset, strings.Replace(goodStep, `"reward":0`, `"reward":"1"`, 1), "not protocol JSON"},
		{"a host that hangs on a step", goodSpec, goodReset, "", "did not answer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var subs []*nats.Subscription
			answer := func(subject, reply string) {
				sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
					if reply != "" {
						_ = m.Respond([]byte(reply))
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				subs = append(subs, sub)
			}
			answer("spa.env.bad.spec", c.spec)
			answer("spa.env.bad.reset", c.reset)
			answer("spa.env.bad.host.h1.step", c.step)
			defer func() {
				for _, s := range subs {
					s.Unsubscribe()
				}
			}()
			nc.Flush()
			start := time.Now()
			err := func() error {
				r, err := Dial(context.Background(), nc, "bad", RemoteOptions{Timeout: 500 * time.Millisecond})
				if err != nil {
					return err
				}
				defer r.Close()
				if err := r.Reset(1); err != nil {
					return err
				}
				_, err = r.Step("A")
				return err
			}()
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
			switch {
			case c.want == "" && err != nil:
				t.Errorf("a good host: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad")):
				t.Errorf("got %v, want an error naming the environment and %q", err, c.want)
			}
		})
	}
}
