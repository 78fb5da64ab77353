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

	"github.com/nats-io/nats.go"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

const nodeExample = "../../examples/node-env"

// startHost runs a host process and waits until a line of its output starts with ready.
func startHost(t *testing.T, cmd *exec.Cmd, ready string) *exec.Cmd {
	t.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), ready) {
				lines <- sc.Text()
			}
		}
	}()
	select {
	case line := <-lines:
		t.Log(line)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not report %q within 60s", cmd.Path, ready)
	}
	return cmd
}

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
	return startHost(t, cmd, "ready")
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

// embeddedBus starts a NATS server on a TCP port, for hosts in other processes.
func embeddedBus(t *testing.T) (*bus.Embedded, *nats.Conn) {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return srv, nc
}

// checkCorridor plays a corridor host (any language) through spa's remote env: seeds repeat,
// invalid actions change nothing, walking to the goal succeeds within the budget, and the host
// passes the conformance suite.
func checkCorridor(t *testing.T, nc *nats.Conn, name string) *Remote {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	remote, err := Dial(ctx, nc, name, RemoteOptions{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var env envs.Env = remote // spa's code sees a plain Env
	if s := env.Spec(); s.Name != name || s.MaxActions != 10 || len(s.Actions) != 2 {
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
	requireConformance(t, nc, name)
	return remote
}

// requireHostGone kills a host mid-episode: the next step must fail with host_gone within the
// timeout, never hang.
func requireHostGone(t *testing.T, env *Remote, host *exec.Cmd) {
	t.Helper()
	if err := env.Reset(99); err != nil {
		t.Fatal(err)
	}
	if err := host.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()
	start := time.Now()
	_, err := env.Step("Left")
	if bus.ErrorCode(err) != bus.CodeHostGone {
		t.Fatalf("step on a killed host: %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("host_gone took %s", d)
	}
}

// requireListed checks that hosts of env, in runtime, answer on spa.env.hosts.
//
// A host answers once it is subscribed, and a loaded machine can be slow to answer within one
// listing's window, so it asks again until every host has answered or the test's time runs out.
func requireListed(t *testing.T, nc *nats.Conn, env, runtime string, hosts int) {
	t.Helper()
	ctx := ctxT(t)
	for {
		infos, err := ListHosts(ctx, nc, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, h := range infos {
			if h.Env == env && h.Runtime == runtime && h.Host != "" && len(h.Variants) > 0 {
				n++
			}
		}
		if n == hosts {
			return
		}
		if n > hosts || ctx.Err() != nil {
			t.Fatalf("spa.env.hosts lists %d %s hosts of %s, want %d: %+v", n, runtime, env, hosts, infos)
		}
	}
}

func TestNodeEnvOverTheBus(t *testing.T) {
	srv, nc := embeddedBus(t)
	node := startNodeCorridor(t, srv.ClientURL())
	requireListed(t, nc, "corridor", "node", 1)
	env := checkCorridor(t, nc, "corridor")
	requireHostGone(t, env, node)
}
