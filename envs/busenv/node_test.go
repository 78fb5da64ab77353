package busenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

const nodeExample = "../../examples/node-env"

// startNodeCorridor runs the JavaScript example host against a TCP server and waits until it
// is subscribed. It skips when node or the example's npm packages are absent.
func startNodeCorridor(t *testing.T, url string) *exec.Cmd {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the Node.js example env is not tested")
	}
	if _, err := os.Stat(filepath.Join(nodeExample, "node_modules", "nats")); err != nil {
		t.Skipf("the example's npm packages are missing (run 'make setup' or 'npm ci' in %s)", nodeExample)
	}
	cmd := exec.Command(node, "corridor.mjs", "--server", url)
	cmd.Dir = nodeExample
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		t.Log(line)
	case <-time.After(30 * time.Second):
		t.Fatal("the node host did not report ready within 30s")
	}
	return cmd
}

// corridorMove reads the coordinate rendering and walks toward the goal.
func corridorMove(obs string) string {
	var p, g int
	i := strings.Index(obs, "You are at column")
	if i < 0 {
		return "Left"
	}
	fmt.Sscanf(obs[i:], "You are at column %d; the goal is at column %d.", &p, &g)
	if g < p {
		return "Left"
	}
	return "Right"
}

func TestNodeEnvOverTheBus(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	node := startNodeCorridor(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	remote, err := Dial(ctx, nc, "corridor", RemoteOptions{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var env envs.Env = remote // spa's code sees a plain Env
	if s := env.Spec(); s.Name != "corridor" || s.MaxActions != 10 || len(s.Actions) != 2 {
		t.Fatalf("spec: %+v", s)
	}
	for seed := int64(0); seed < 30; seed++ {
		if err := env.Reset(seed); err != nil {
			t.Fatal(err)
		}
		first := env.Render(envs.Raw)
		if err := env.Reset(seed); err != nil {
			t.Fatal(err)
		}
		if again := env.Render(envs.Raw); again != first {
			t.Fatalf("seed %d renders %q then %q", seed, first, again)
		}
		if st, err := env.Step("Up"); err != nil || st.Valid || st.Done {
			t.Fatalf("invalid action: %+v %v", st, err)
		}
		var last envs.Step
		for steps := 0; !last.Done; steps++ {
			if steps > 10 {
				t.Fatal("episode longer than its budget")
			}
			if last, err = env.Step(corridorMove(env.Render(envs.Coords))); err != nil {
				t.Fatal(err)
			}
		}
		if !last.Success || last.Reward != 1 {
			t.Fatalf("seed %d: walking to the goal gave %+v", seed, last)
		}
		if _, err := env.Step("Left"); !errors.Is(err, envs.ErrEpisodeDone) {
			t.Fatalf("step after done: %v", err)
		}
	}

	// The JavaScript host reports the protocol's errors like the Go one.
	live := resetRaw(t, nc, "corridor", 3)
	for _, tc := range []struct{ code, subject, body string }{
		{bus.CodeBadRequest, bus.EnvSubject("corridor", "reset"), `{"protocol":1,`},
		{bus.CodeUnsupportedProtocol, bus.EnvSubject("corridor", "reset"), `{"protocol":9,"seed":1}`},
		{bus.CodeUnknownVariant, bus.EnvSubject("corridor", "spec"), `{"protocol":1,"variant":"99"}`},
		{bus.CodeBadSeed, bus.EnvSubject("corridor", "reset"), `{"protocol":1,"seed":-4}`},
		{bus.CodeBadSeed, bus.EnvSubject("corridor", "reset"), `{"protocol":1,"seed":2.5}`},
		{bus.CodeBadSeed, live.Subject + ".explore", fmt.Sprintf(`{"protocol":1,"session":%q,"seed":1.5}`, live.Session)},
		{bus.CodeBadSeed, live.Subject + ".explore", fmt.Sprintf(`{"protocol":1,"session":%q,"seed":"abc"}`, live.Session)},
		{bus.CodeBadSeed, live.Subject + ".explore", fmt.Sprintf(`{"protocol":1,"session":%q,"seed":1152921504606846976}`, live.Session)},
		{bus.CodeBadAction, live.Subject + ".step", fmt.Sprintf(`{"protocol":1,"session":%q,"action":[]}`, live.Session)},
		{bus.CodeUnknownSession, live.Subject + ".step", `{"protocol":1,"session":"gone","action":"Left"}`},
		{bus.CodeUnknownOp, live.Subject + ".jump", `{"protocol":1}`},
	} {
		if e, data := request(t, nc, tc.subject, tc.body); e.Error == nil || e.Error.Code != tc.code {
			t.Errorf("%s: got %s, want %s", tc.body, data, tc.code)
		}
	}

	// Kill the host mid-episode: the next step fails with host_gone within the timeout.
	if err := env.Reset(99); err != nil {
		t.Fatal(err)
	}
	if err := node.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = node.Wait()
	start := time.Now()
	_, err = env.Step("Left")
	if bus.ErrorCode(err) != bus.CodeHostGone {
		t.Fatalf("step on a killed node host: %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("host_gone took %s", d)
	}
}
