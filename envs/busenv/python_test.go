package busenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spa-rl/spa/envs"
)

const pythonSDK = "../../sdk/python"

// sdkPython is the Python of the SDK's virtual environment (scripts/pyenv.sh, run by make setup).
// Tests skip without it, saying why.
func sdkPython(t *testing.T) string {
	t.Helper()
	py, err := filepath.Abs(filepath.Join(pythonSDK, ".venv", "bin", "python"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pythonSDK, ".venv", ".spa-requirements")); err != nil {
		t.Skipf("the Python SDK's virtual environment is missing (%s); run scripts/pyenv.sh, which needs python3 with venv and PyPI", filepath.Join(pythonSDK, ".venv"))
	}
	return py
}

func startPythonExample(t *testing.T, example, url string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(sdkPython(t), append([]string{filepath.Join("examples", example), "--bus", url}, args...)...)
	cmd.Dir = pythonSDK
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	return startHost(t, cmd, "serving")
}

// TestPythonEnvOverTheBus serves the SDK's example environment from Python: spa's agents play it,
// it passes the conformance suite, and a killed host gives host_gone.
func TestPythonEnvOverTheBus(t *testing.T) {
	srv, nc := embeddedBus(t)
	host := startPythonExample(t, "corridor.py", srv.ClientURL())
	second := startPythonExample(t, "corridor.py", srv.ClientURL()) // a second host shares the resets
	requireListed(t, nc, "corridor-py", "python", 2)
	env := checkCorridor(t, nc, "corridor-py")
	// SIGTERM stops a host cleanly: it drains its connection and exits 0.
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the Python host after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the Python host did not stop within 10s of SIGTERM")
	}
	requireHostGone(t, env, host)
}

// TestGymnasiumEnvOverTheBus serves Gymnasium's FrozenLake-v1 through the adapter: it passes the
// conformance suite, its seeds repeat, and spa's remote env plays it to the end of episodes.
func TestGymnasiumEnvOverTheBus(t *testing.T) {
	srv, nc := embeddedBus(t)
	startPythonExample(t, "frozenlake_gym.py", srv.ClientURL())
	requireConformance(t, nc, "frozenlake-gym")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env, err := Dial(ctx, nc, "frozenlake-gym", RemoteOptions{Variant: "4x4", Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s := env.Spec(); s.Variant != "4x4" || len(s.Actions) != 4 {
		t.Fatalf("spec %+v", s)
	}
	successes := 0
	for seed := int64(0); seed < 20; seed++ {
		if err := env.Reset(seed); err != nil {
			t.Fatal(err)
		}
		if grid := env.Render(envs.Raw); strings.Count(grid, "P") != 1 || strings.Count(grid, "\n") != 3 {
			t.Fatalf("seed %d: rendering %q", seed, grid)
		}
		if st, err := env.Step("Jump"); err != nil || st.Valid {
			t.Fatalf("an unknown action name: %+v %v", st, err)
		}
		for steps := 0; ; steps++ {
			// Right then Down heads for the goal in the corner; the ice slips.
			st, err := env.Step([]string{"Right", "Down"}[steps%2])
			if err != nil {
				t.Fatal(err)
			}
			if st.Done {
				if st.Success {
					successes++
				}
				break
			}
			if steps > 100 {
				t.Fatal("an episode outlived its budget")
			}
		}
	}
	t.Logf("%d of 20 episodes reached the goal", successes)
}
