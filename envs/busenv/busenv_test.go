package busenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
	_ "github.com/spa-rl/spa/envs/builtin"
)

// startBus starts an embedded server and returns an in-process connection to it.
func startBus(t testing.TB) (*bus.Embedded, *nats.Conn) {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return e, nc
}

func builtinHost(t *testing.T, nc *nats.Conn, env string, opts HostOptions) *Host {
	t.Helper()
	opts.Env = env
	if opts.New == nil {
		opts.New = func(v string) (envs.Env, error) { return envs.New(env, v) }
	}
	h, err := NewHost(nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestRemoteMatchesLocal plays the same random episodes locally and over the bus and requires
// identical steps and renders, so a rollout cannot tell the two apart.
func TestRemoteMatchesLocal(t *testing.T) {
	_, nc := startBus(t)
	for _, info := range envs.List() {
		for _, v := range info.Variants {
			t.Run(info.Name+"/"+v.Name, func(t *testing.T) {
				builtinHost(t, nc, info.Name, HostOptions{})
				remote, err := Dial(ctxT(t), nc, info.Name, RemoteOptions{Variant: v.Name})
				if err != nil {
					t.Fatal(err)
				}
				defer remote.Close()
				local, err := envs.New(info.Name, v.Name)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := remote.Spec(), local.Spec(); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("spec differs:\nremote %+v\nlocal  %+v", got, want)
				}
				rng := rand.New(rand.NewPCG(1, 2))
				for seed := int64(0); seed < 5; seed++ {
					if err := remote.Reset(seed); err != nil {
						t.Fatal(err)
					}
					if err := local.Reset(seed); err != nil {
						t.Fatal(err)
					}
					for turn := 0; ; turn++ {
						for _, m := range local.Spec().RenderModes {
							if r, l := remote.Render(m), local.Render(m); r != l {
								t.Fatalf("seed %d turn %d %s render differs:\nremote:\n%s\nlocal:\n%s", seed, turn, m, r, l)
							}
						}
						action := envs.RandomAction(local, rng)
						if turn%4 == 3 {
							action = "nonsense" // invalid actions must match too
						}
						ls, lerr := local.Step(action)
						rs, rerr := remote.Step(action)
						if (lerr == nil) != (rerr == nil) || ls != rs {
							t.Fatalf("seed %d turn %d action %q: local %+v %v, remote %+v %v", seed, turn, action, ls, lerr, rs, rerr)
						}
						if ls.Done {
							if _, err := remote.Step(action); !errors.Is(err, envs.ErrEpisodeDone) {
								t.Fatalf("step after done: %v, want ErrEpisodeDone", err)
							}
							break
						}
						if turn > 200 {
							t.Fatal("episode never ended")
						}
					}
				}
			})
		}
	}
}

func TestRemoteExploreProposesWellFormedActions(t *testing.T) {
	_, nc := startBus(t)
	builtinHost(t, nc, "sudoku", HostOptions{})
	r, err := Dial(ctxT(t), nc, "sudoku", RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reset(3); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	valid := 0
	for i := 0; i < 20; i++ {
		a := r.RandomAction(rng)
		if strings.Count(a, ",") != 2 {
			t.Fatalf("explore proposed %q, want r,c,v", a)
		}
		st, err := r.Step(a)
		if err != nil {
			t.Fatal(err)
		}
		if st.Valid {
			valid++
		}
		if st.Done {
			break
		}
	}
	if valid == 0 {
		t.Error("no proposed action was valid")
	}
}

// request sends a raw body and decodes the reply envelope.
func request(t *testing.T, nc *nats.Conn, subject, body string) (bus.Envelope, []byte) {
	t.Helper()
	msg, err := nc.Request(subject, []byte(body), 5*time.Second)
	if err != nil {
		t.Fatalf("request %s %s: %v", subject, body, err)
	}
	var env bus.Envelope
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		t.Fatalf("reply to %s is not JSON: %q", body, msg.Data)
	}
	return env, msg.Data
}

func resetRaw(t *testing.T, nc *nats.Conn, env string, seed int) bus.ResetReply {
	t.Helper()
	_, data := request(t, nc, bus.EnvSubject(env, "reset"), fmt.Sprintf(`{"protocol":1,"seed":%d}`, seed))
	var r bus.ResetReply
	if err := json.Unmarshal(data, &r); err != nil || r.Error != nil {
		t.Fatalf("reset: %s", data)
	}
	return r
}

// TestEveryErrorCodeFromBadInput drives each protocol error with bad input on the wire: the
// conformance suite (conformance.json) against every built-in environment's host, then the codes
// that need a set-up of their own.
func TestEveryErrorCodeFromBadInput(t *testing.T) {
	_, nc := startBus(t)
	h := builtinHost(t, nc, "sokoban", HostOptions{Variants: []string{"6x6-1box"}})
	live := resetRaw(t, nc, "sokoban", 1)
	finished := resetRaw(t, nc, "sokoban", 0)
	// Play seed 0 to its end with the solver-free trick of stepping until done.
	for i := 0; i < 100; i++ {
		_, data := request(t, nc, finished.Subject+".step", fmt.Sprintf(`{"protocol":1,"session":%q,"action":"%s"}`, finished.Session, []string{"Up", "Right", "Down", "Left"}[i%4]))
		var st bus.StepReply
		_ = json.Unmarshal(data, &st)
		if st.Error != nil {
			t.Fatalf("step: %s", data)
		}
		if st.Done {
			break
		}
	}
	requireListed(t, nc, "sokoban", "go", 1)
	seen := map[string]bool{}
	for _, env := range []string{"sokoban", "frozenlake", "sudoku"} {
		var extra *Host
		if env != "sokoban" {
			extra = builtinHost(t, nc, env, HostOptions{})
		}
		results, err := Conformance(ctxT(t), nc, env, 5*time.Second)
		if extra != nil {
			extra.Close() // the set-ups below start hosts of their own
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range results {
			// Random play cannot be relied on to finish a Sudoku; the other two must end.
			if r.Err != nil || r.Skipped != "" && env != "sudoku" {
				t.Errorf("%s: %s: %v %s", env, r.Name, r.Err, r.Skipped)
			}
		}
		if len(results) < 30 {
			t.Errorf("%s: only %d checks ran", env, len(results))
		}
	}
	var file struct{ Cases []conformanceCase }
	json.Unmarshal(conformanceJSON, &file)
	for _, c := range file.Cases {
		seen[c.Code] = true
	}
	step := h.Subject() + ".step"
	// The live session survived all of that.
	_, data := request(t, nc, step, fmt.Sprintf(`{"protocol":1,"session":%q,"action":"Up"}`, live.Session))
	if strings.Contains(string(data), "error") {
		t.Errorf("live session broken by bad requests: %s", data)
	}

	// Codes that need other set-ups.
	if _, err := Dial(ctxT(t), nc, "chess", RemoteOptions{}); bus.ErrorCode(err) != bus.CodeUnknownEnv || !strings.Contains(err.Error(), "spa env serve chess") {
		t.Errorf("dial unknown env: %v", err)
	}
	seen[bus.CodeUnknownEnv] = true

	small := builtinHost(t, nc, "frozenlake", HostOptions{MaxSessions: 1})
	resetRaw(t, nc, "frozenlake", 1)
	if env, data := request(t, nc, bus.EnvSubject("frozenlake", "reset"), `{"protocol":1,"seed":2}`); env.Error == nil || env.Error.Code != bus.CodeOverloaded {
		t.Errorf("second reset on a full host: %s", data)
	}
	seen[bus.CodeOverloaded] = true
	small.Close()

	builtinHost(t, nc, "broken", HostOptions{New: func(string) (envs.Env, error) { return &panicky{}, nil }})
	b := resetRaw(t, nc, "broken", 1)
	if env, data := request(t, nc, b.Subject+".step", fmt.Sprintf(`{"protocol":1,"session":%q,"action":"x"}`, b.Session)); env.Error == nil || env.Error.Code != bus.CodeInternal || !strings.Contains(env.Error.Message, "panic") {
		t.Errorf("step of a panicking env: %s", data)
	}
	seen[bus.CodeInternal] = true

	r, err := Dial(ctxT(t), nc, "sokoban", RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reset(4); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := r.Step("Up"); bus.ErrorCode(err) != bus.CodeHostGone {
		t.Errorf("step after the host closed: %v, want host_gone", err)
	}
	seen[bus.CodeHostGone] = true

	for _, code := range bus.ErrorCodes {
		if !seen[code] {
			t.Errorf("no test produces error code %s", code)
		}
	}
}

type panicky struct{}

func (*panicky) Spec() envs.Spec {
	return envs.Spec{Name: "broken", Variant: "v", RenderModes: []envs.RenderMode{envs.Raw}}
}
func (*panicky) Reset(int64) error              { return nil }
func (*panicky) Step(string) (envs.Step, error) { panic("boom") }
func (*panicky) Render(envs.RenderMode) string  { return "" }

func TestDeadHostFailsWithinTimeout(t *testing.T) {
	e, nc := startBus(t)
	// A host on its own connection, killed mid-episode by closing that connection.
	hostConn, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewHost(hostConn, HostOptions{Env: "sokoban", New: func(v string) (envs.Env, error) { return envs.New("sokoban", v) }}); err != nil {
		t.Fatal(err)
	}
	r, err := Dial(ctxT(t), nc, "sokoban", RemoteOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reset(1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Step("Up"); err != nil {
		t.Fatal(err)
	}
	hostConn.Close()
	start := time.Now()
	_, err = r.Step("Down")
	if bus.ErrorCode(err) != bus.CodeHostGone {
		t.Fatalf("step on a killed host: %v, want host_gone", err)
	}
	// The server may still route a request to the dying connection, which then costs the
	// timeout; either way the answer comes within it.
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("host_gone took %s", d)
	}

	// A host that hangs (subscribed, never answers) costs the timeout, then a clear error.
	hung, err := nc.Subscribe("spa.env.hung.>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Unsubscribe()
	start = time.Now()
	_, err = Dial(context.Background(), nc, "hung", RemoteOptions{Timeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no answer on spa.env.hung.spec within 300ms") {
		t.Fatalf("dial of a hung host: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("hung host took %s to fail", d)
	}
}

func TestSessionTTLExpiresAbandonedEpisodes(t *testing.T) {
	_, nc := startBus(t)
	h := builtinHost(t, nc, "sokoban", HostOptions{SessionTTL: 100 * time.Millisecond})
	r, err := Dial(ctxT(t), nc, "sokoban", RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reset(1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.Stats().Sessions > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := h.Stats(); st.Sessions != 0 || st.Expired != 1 {
		t.Fatalf("stats after TTL: %+v", st)
	}
	if _, err := r.Step("Up"); bus.ErrorCode(err) != bus.CodeUnknownSession {
		t.Fatalf("step on an expired session: %v", err)
	}
}

func TestHostsShareResetsAndKeepTheirSessions(t *testing.T) {
	_, nc := startBus(t)
	hosts := []*Host{builtinHost(t, nc, "sokoban", HostOptions{}), builtinHost(t, nc, "sokoban", HostOptions{})}
	remotes := make([]*Remote, 40)
	for i := range remotes {
		r, err := Dial(ctxT(t), nc, "sokoban", RemoteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Reset(int64(i)); err != nil {
			t.Fatal(err)
		}
		remotes[i] = r
	}
	for i, h := range hosts {
		if n := h.Stats().Sessions; n == 0 || n == len(remotes) {
			t.Errorf("host %d holds %d of %d sessions; the queue group should share them", i, n, len(remotes))
		}
	}
	for _, r := range remotes {
		if _, err := r.Step("Left"); err != nil {
			t.Fatalf("step routed to the wrong host: %v", err)
		}
		r.Close()
	}
	// Closes are fire-and-forget; wait for them to land.
	deadline := time.Now().Add(5 * time.Second)
	for hosts[0].Stats().Sessions+hosts[1].Stats().Sessions > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := hosts[0].Stats().Sessions + hosts[1].Stats().Sessions; n != 0 {
		t.Errorf("%d sessions left after Close", n)
	}
}

func TestNewHostRejectsBadOptions(t *testing.T) {
	_, nc := startBus(t)
	newSok := func(v string) (envs.Env, error) { return envs.New("sokoban", v) }
	for _, tc := range []struct {
		opts HostOptions
		want string
	}{
		{HostOptions{Env: "a.b", New: newSok}, "'-' and '_'"},
		{HostOptions{Env: "sokoban"}, "no environment factory"},
		{HostOptions{Env: "sokoban", New: newSok, Variants: []string{"bogus"}}, "bogus"},
		{HostOptions{Env: "sokoban", New: newSok, ID: "x y"}, "host id"},
	} {
		if _, err := NewHost(nc, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// requireConformance runs the conformance suite against env's hosts and fails on any failed or
// skipped check.
func requireConformance(t *testing.T, nc *nats.Conn, env string) {
	t.Helper()
	results, err := Conformance(ctxT(t), nc, env, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Err != nil || r.Skipped != "" {
			t.Errorf("%s: %s: %v %s", env, r.Name, r.Err, r.Skipped)
		}
	}
}
