package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startPythonHost runs one of the Python SDK's examples against url and waits until it serves.
// It skips when the SDK's virtual environment (scripts/pyenv.sh) is missing.
func startPythonHost(t *testing.T, example, url string) {
	t.Helper()
	sdk := filepath.Join("..", "..", "sdk", "python")
	if _, err := os.Stat(filepath.Join(sdk, ".venv", ".spa-requirements")); err != nil {
		t.Skipf("the Python SDK's virtual environment is missing (%s); run scripts/pyenv.sh, which needs python3 with venv and PyPI", filepath.Join(sdk, ".venv"))
	}
	cmd := exec.Command(filepath.Join(".venv", "bin", "python"), filepath.Join("examples", example), "--bus", url)
	cmd.Dir = sdk
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "serving") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start serving within 60s", example)
	}
}

// TestRunOnPythonEnvironments trains with the smoke preset on environments served from Python: the
// SDK's example and Gymnasium's FrozenLake-v1 through the adapter. Every stage runs (warm-up,
// self-play, ground truth, world-model SFT, PPO, evaluation, report) with nothing of them in spa.
func TestRunOnPythonEnvironments(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "nats://" + addr
	dir := t.TempDir()
	busOut := background(t, "bus", "--listen", addr, "--store", filepath.Join(dir, "store"))
	waitFor(t, "spa bus", func() bool { return strings.Contains(busOut.String(), "JetStream on "+url) })
	for _, c := range []struct{ example, env string }{{"corridor.py", "corridor-py"}, {"frozenlake_gym.py", "frozenlake-gym"}} {
		startPythonHost(t, c.example, url)
		code, out, errOut := spa(t, "run", "--preset", "smoke", "--bus", url, "--env", c.env, "--run-dir", filepath.Join(dir, c.env),
			"--set", "run.methods=spa")
		if code != 0 || !strings.Contains(out+errOut, "report: ") {
			t.Fatalf("spa run on %s: exit %d\n%s\n%s", c.env, code, out, errOut)
		}
		reports, _ := filepath.Glob(filepath.Join(dir, c.env, "*", "report.md"))
		if len(reports) != 1 {
			t.Fatalf("%s: reports %v", c.env, reports)
		}
		report, _ := os.ReadFile(reports[0])
		for _, want := range []string{"after world-model SFT", "after PPO", c.env} {
			if !strings.Contains(string(report), want) {
				t.Errorf("%s: the report lacks %q", c.env, want)
			}
		}
	}
}
