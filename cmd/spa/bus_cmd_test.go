package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs/busenv"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// background runs a long-lived spa command until the test ends and returns its output.
func background(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- executeContext(ctx, args, out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("spa %s exited %d: %s", strings.Join(args, " "), code, out)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("spa %s did not stop", strings.Join(args, " "))
		}
	})
	return out
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBusCommands runs spa bus, spa env serve, spa policy and spa traj export against each
// other over loopback TCP, as separate machines would.
func TestBusCommands(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "nats://" + addr
	dir := t.TempDir()

	busOut := background(t, "bus", "--listen", addr, "--store", filepath.Join(dir, "store"), "--set", "bus.token=sesame")
	waitFor(t, "spa bus", func() bool { return strings.Contains(busOut.String(), "JetStream on "+url) })

	// Wrong credentials fail fast and say which were tried.
	code, _, errOut := spa(t, "env", "serve", "sokoban", "--bus", url, "--set", "bus.token=wrong")
	if code == 0 || !strings.Contains(errOut, "rejected token (bus.token)") {
		t.Errorf("env serve with a wrong token: exit %d, %s", code, errOut)
	}
	code, _, errOut = spa(t, "env", "serve", "sokoban")
	if code == 0 || !strings.Contains(errOut, "needs --bus") {
		t.Errorf("env serve without a bus: exit %d, %s", code, errOut)
	}

	serveOut := background(t, "env", "serve", "sokoban", "--bus", url, "--set", "bus.token=sesame", "--variant", "6x6-1box", "--replicas", "2")
	waitFor(t, "spa env serve", func() bool { return strings.Contains(serveOut.String(), "with 2 host(s)") })
	if !strings.Contains(serveOut.String(), "host(s): spa.env.sokoban.reset\n") {
		t.Errorf("env serve's startup line: %q", serveOut.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Options{URL: url, Token: "sesame"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := busenv.Dial(ctx, b.Conn, "sokoban", busenv.RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Reset(5); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Step("Up"); err != nil || !strings.Contains(r.Render("raw"), "#") {
		t.Fatalf("remote step: %v, state %q", err, r.Render("raw"))
	}
	if r.Spec().Variant != "6x6-1box" {
		t.Errorf("variant %q", r.Spec().Variant)
	}

	// What the bus serves: one environment, two hosts.
	if code, out, errOut := spa(t, "env", "list", "--bus", url, "--set", "bus.token=sesame"); code != 0 || !strings.Contains(out, "sokoban  2 ") || strings.Count(out, "go ") != 2 {
		t.Errorf("env list --bus: %d %q %s", code, out, errOut)
	}
	// The remote environment passes the conformance suite, and plays in the terminal as a
	// built-in one does.
	if code, out, errOut := spa(t, "env", "check", "sokoban", "--bus", url, "--set", "bus.token=sesame"); code != 0 || !strings.Contains(out, "0 failed") {
		t.Errorf("env check: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := spa(t, "env", "check", "chess", "--bus", url, "--set", "bus.token=sesame"); code == 0 || !strings.Contains(errOut, "no host serves chess") {
		t.Errorf("env check of an environment nobody serves: %d %s %s", code, out, errOut)
	}
	code, out, errOut := spaIn(t, "up\n", "env", "play", "sokoban", "--bus", url, "--set", "bus.token=sesame", "--seed", "5", "--json")
	_, local, _ := spaIn(t, "up\n", "env", "play", "sokoban", "--variant", "6x6-1box", "--seed", "5", "--json")
	if code != 0 || out != local {
		t.Errorf("env play over the bus: %d %s %s\nlocally:\n%s", code, out, errOut, local)
	}

	// Policy: set, show, refuse to go back.
	auth := []string{"--bus", url, "--set", "bus.token=sesame"}
	if code, out, errOut := spa(t, append([]string{"policy", "set", "--run", "r1", "--version", "2", "--model", "spa-v2", "--weight-dir", "/ckpt/2"}, auth...)...); code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("policy set: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := spa(t, append([]string{"policy", "set", "--run", "r1", "--version", "1", "--model", "old"}, auth...)...); code == 0 || !strings.Contains(errOut, "not newer") {
		t.Errorf("policy set backwards: %d %s", code, errOut)
	}
	if code, out, _ := spa(t, append([]string{"policy", "show", "--run", "r1"}, auth...)...); code != 0 || !strings.Contains(out, "version 2, model spa-v2, weights /ckpt/2") {
		t.Errorf("policy show: %d %s", code, out)
	}
	if code, _, _ := spa(t, append([]string{"policy", "show", "--run", "nope"}, auth...)...); code != 3 {
		t.Errorf("policy show of an unknown run exited %d, want 3", code)
	}

	// Trajectories: publish some, export them.
	pub, err := bus.NewPublisher(b.Conn, bus.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := pub.Publish(ctx, bus.SyntheticTrajectory("r1", bus.TrajectoryID("cli", i), 700)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	outFile := filepath.Join(dir, "r1.jsonl")
	code, _, errOut = spa(t, append([]string{"traj", "export", "--run", "r1", "-o", outFile}, auth...)...)
	if code != 0 || !strings.Contains(errOut, "exported 300 trajectories of run r1") {
		t.Fatalf("traj export: %d %s", code, errOut)
	}
	data, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 300 {
		t.Fatalf("%d lines", len(lines))
	}
	if _, err := bus.DecodeTrajectory([]byte(lines[299])); err != nil {
		t.Error(err)
	}
	// A mistyped run id is an error that names the runs there are, and leaves no file behind.
	typo := filepath.Join(dir, "typo.jsonl")
	code, _, errOut = spa(t, append([]string{"traj", "export", "--run", "rl", "-o", typo}, auth...)...)
	if code == 0 || !strings.Contains(errOut, "no trajectories stored for this run") || !strings.Contains(errOut, "r1 (300)") {
		t.Errorf("export of an unknown run: %d %s", code, errOut)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Errorf("export of an unknown run left %s behind: %v", typo, err)
	}
	code, _, errOut = spa(t, "traj", "export", "--run", "r1", "--run-dir", dir)
	if code == 0 || !strings.Contains(errOut, "no embedded store for run \"r1\"") {
		t.Errorf("export without a bus or store: %d %s", code, errOut)
	}
}

// TestTrajExportFromARunsStore reads a finished run's embedded store without any server.
func TestTrajExportFromARunsStore(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Options{StoreDir: bus.DefaultStoreDir(filepath.Join(dir, "done1"))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.EnsureTrajStream(ctx, b.JS, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub, _ := bus.NewPublisher(b.Conn, bus.PublisherOptions{})
	for i := range 5 {
		if err := pub.Publish(ctx, bus.SyntheticTrajectory("done1", bus.TrajectoryID("x", i), 300)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b.Close()
	code, out, errOut := spa(t, "traj", "export", "--run", "done1", "--run-dir", dir)
	if code != 0 || strings.Count(out, "\n") != 5 || !strings.Contains(errOut, "exported 5") {
		t.Fatalf("export: %d %q %s", code, out, errOut)
	}
}
