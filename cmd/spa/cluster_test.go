package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/internal/testdeadline"
	"github.com/spa-rl/spa/learner"
)

// The tests in this file start spa as separate OS processes over loopback TCP, as machines of a
// cluster would run it: the test binary re-executes itself as the spa command.
const cliEnv = "SPATEST_CLI"

// proc is one spa (or nats-server) process.
type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startProc starts `spa args...` as its own process; it is killed when the test ends.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return startExe(t, name, exe, append(os.Environ(), cliEnv+"=1"), args...)
}

func startExe(t *testing.T, name, exe string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, args: args, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Children die with the test binary even when it crashes before its cleanups run.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	onSpawner(func() { err = p.cmd.Start() })
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s (%s) output:\n%s", name, strings.Join(args, " "), tail(p.out.String(), 3000))
		}
	})
	return p
}

// spawner is a goroutine locked to one OS thread for the life of the test binary, which starts
// every child process. The kernel sends Pdeathsig when the thread that forked a child exits, not
// the process (go.dev/issue/27505), and Go ends a thread whose goroutine locked it and returned:
// every in-process command that runs torch work (spa model init, here) does that on torchrt's
// executor. A bus forked from a thread that such a command later took was killed in the middle
// of a test; forked from this thread, children die only with the test binary.
var spawner = sync.OnceValue(func() chan<- func() {
	c := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range c {
			f()
		}
	}()
	return c
})

// onSpawner runs f on the spawner's thread and returns when it has.
func onSpawner(f func()) {
	done := make(chan struct{})
	spawner() <- func() { f(); close(done) }
	<-done
}

// tail is the end of a process's output, and the start of its first panic when there is one (a
// Go panic, a C++ terminate, or the message gotch puts before a libtorch error's stack): the head
// names the error, which a stack trace pushes out of the tail.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	out := "…" + s[len(s)-n:]
	for _, marker := range []string{"panic: ", "terminate called", "Libtorch API Error:"} {
		if i := strings.Index(s, marker); i >= 0 && i < len(s)-n {
			return s[i:min(len(s), i+1500)] + "\n…\n" + out
		}
	}
	return out
}

// kill sends SIGKILL (a crash: no cleanup, no flushing) and waits for the process to go.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(testdeadline.Remaining(t)); err != nil {
		t.Errorf("%s after SIGTERM: %v\n%s", p.name, err, tail(p.out.String(), 2000))
	}
}

// wait waits for the process to exit and returns its error (nil for exit status 0).
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("still running after %s", d)
	}
}

func (p *proc) waitOutput(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.out.String(), want) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, want, tail(p.out.String(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q in %s:\n%s", p.name, want, d, tail(p.out.String(), 3000))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// natsServerBinary finds Debian's nats-server (installed in /usr/sbin) or one on PATH.
func natsServerBinary() string {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	return ""
}

// cluster is a run spread over processes: a NATS server, env hosts, an inference server,
// rollout workers and a learner, all on loopback TCP.
type cluster struct {
	t             *testing.T
	dir, model    string
	run           string
	natsBin       string // "" runs spa bus
	busAddr       string
	endpoint      string
	steps, batch  int
	bus, serve    *proc
	envs, workers []*proc
	learner       *proc
}

// clusterSteps is how many PPO steps a cluster's learner runs.
const clusterSteps = 5

func newCluster(t *testing.T, natsBin string) *cluster {
	c := &cluster{t: t, dir: t.TempDir(), run: "c1", natsBin: natsBin, steps: clusterSteps, batch: 4}
	c.model = filepath.Join(c.dir, "tiny")
	// Two layers: the clusters test the plumbing, and the server generating for free-running
	// workers was most of each cluster's CPU.
	if code, _, errOut := spa(t, "model", "init", "--out", c.model, "--layers", "2", "--vocab", "400", "--corpus-seeds", "5"); code != 0 {
		t.Fatal(errOut)
	}
	c.busAddr = freePort(t)
	c.startBus()
	for i := range 2 {
		c.envs = append(c.envs, c.startEnvHost(i))
	}
	addr := freePort(t)
	c.endpoint = "http://" + addr + "/v1"
	c.serve = startProc(t, "serve", "serve", "--model", c.model, "--listen", addr, "--threads", "1", "--set", "server.max_model_len=1024", "--set", "server.kv_cache_mb=64")
	c.serve.waitOutput(t, "spa serve: ", testdeadline.Remaining(t))
	for i := range 2 {
		c.workers = append(c.workers, c.startWorker(i))
	}
	return c
}

func (c *cluster) busURL() string { return "nats://" + c.busAddr }

func (c *cluster) startBus() {
	store := filepath.Join(c.dir, "nats")
	if c.natsBin != "" {
		host, port, _ := net.SplitHostPort(c.busAddr)
		c.bus = startExe(c.t, "nats-server", c.natsBin, os.Environ(), "-js", "-a", host, "-p", port, "-sd", store)
		c.bus.waitOutput(c.t, "Server is ready", testdeadline.Remaining(c.t))
		return
	}
	c.bus = startProc(c.t, "bus", "bus", "--listen", c.busAddr, "--store", store)
	c.bus.waitOutput(c.t, "JetStream on", testdeadline.Remaining(c.t))
}

func (c *cluster) startEnvHost(i int) *proc {
	p := startProc(c.t, fmt.Sprintf("env host %d", i), "env", "serve", "sokoban", "--bus", c.busURL(), "--set", "bus.timeout=2s")
	p.waitOutput(c.t, "serving sokoban", testdeadline.Remaining(c.t))
	return p
}

func (c *cluster) startWorker(i int) *proc {
	return startProc(c.t, fmt.Sprintf("worker %d", i), "rollout", "--endpoint", c.endpoint, "--bus", c.busURL(), "--run", c.run, "--tokenizer", c.model,
		"--remote-env", "--worker", fmt.Sprintf("w%d", i), "--workers", "1", "--set", "rollout.group_size=2",
		"--set", "rollout.max_tokens=24", "--set", "rollout.max_turns=2", "--set", "bus.timeout=2s")
}

func (c *cluster) startLearner(resume bool) *proc {
	args := []string{"learn", "--stage", "ppo", "--model", c.model, "--bus", c.busURL(), "--run", c.run, "--sync", "spa=" + c.endpoint,
		"--out", filepath.Join(c.dir, "ppo"), "--threads", "1",
		"--set", fmt.Sprintf("learner.ppo.steps=%d", c.steps), "--set", "rollout.groups=2", "--set", "rollout.group_size=2",
		"--set", "learner.ppo.keep_group_ratio=1", "--set", "learner.ack_wait=3s", "--set", "learner.keep_checkpoints=0"}
	if resume {
		args = append(args, "--resume")
	}
	c.learner = startProc(c.t, "learner", args...)
	return c.learner
}

// waitStep waits until the learner has checkpointed step n.
func (c *cluster) waitStep(n int, d time.Duration) {
	c.t.Helper()
	dir := filepath.Join(c.dir, "ppo", fmt.Sprintf("step-%06d", n), "trainer_state.json")
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(dir); err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the learner did not reach step %d in %s:\n%s", n, d, tail(c.learner.out.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var episodesLine = regexp.MustCompile(`episodes (\d+) \(success \d+\), turns \d+, restarts \d+, failed (\d+)`)

// finish waits for the learner, stops the workers cleanly and checks the run's books: every
// trajectory in the stream is distinct, every trajectory the workers counted as published is in
// the stream, and the learner's totals account for exactly the trajectories it acknowledged.
// faults says what a test killed, which decides what the books may show at the end.
type faults struct {
	workers int  // rollout workers killed
	bus     bool // the NATS server was killed
	learner bool // the learner was killed and restarted
}

func (c *cluster) finish(killed faults) {
	killedWorkers, serverKilled := killed.workers, killed.bus
	t := c.t
	t.Helper()
	if err := c.learner.wait(testdeadline.Remaining(t)); err != nil {
		t.Fatalf("learner: %v\n%s", err, tail(c.learner.out.String(), 3000))
	}
	if want := fmt.Sprintf("ppo: %d steps, version %d", c.steps, c.steps); !strings.Contains(c.learner.out.String(), want) {
		t.Fatalf("learner output lacks %q:\n%s", want, tail(c.learner.out.String(), 3000))
	}
	published := 0
	for _, w := range c.workers {
		w.stop(t)
		m := episodesLine.FindStringSubmatch(w.out.String())
		if m == nil {
			t.Fatalf("%s printed no episode count:\n%s", w.name, tail(w.out.String(), 2000))
		}
		n, _ := strconv.Atoi(m[1])
		published += n
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Options{URL: c.busURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stream, err := b.JS.Stream(ctx, bus.TrajStream)
	if err != nil {
		t.Fatal(err)
	}
	si, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.dir, "export.jsonl")
	if code, _, errOut := spa(t, "traj", "export", "--bus", c.busURL(), "--run", c.run, "-o", file); code != 0 {
		t.Fatal(errOut)
	}
	ids := map[string]bool{}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	lines := 0
	for sc.Scan() {
		tr, err := bus.DecodeTrajectory(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		lines++
		if ids[tr.ID] {
			t.Errorf("trajectory %s is in the stream twice", tr.ID)
		}
		ids[tr.ID] = true
	}
	if uint64(lines) != si.State.Msgs {
		t.Errorf("exported %d trajectories, the stream holds %d", lines, si.State.Msgs)
	}
	// Workers stopped cleanly report only trajectories the server acknowledged; killed ones
	// report nothing, so the stream can only hold more.
	if lines < published || (killedWorkers == 0 && lines != published) {
		t.Errorf("workers published %d trajectories (%d killed workers), the stream holds %d", published, killedWorkers, lines)
	}

	cons, err := stream.Consumer(ctx, c.run+"-learner")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, st, err := learner.Latest(filepath.Join(c.dir, "ppo"))
	if err != nil {
		t.Fatal(err)
	}
	tot := st.Totals
	counted := int64(tot.Trained + tot.Filtered + tot.Stale + tot.Invalid)
	// Every step's checkpoint lists the stream positions it used or set aside (the test keeps
	// them all): no position twice, none skipped, and as many as the totals count.
	seen := map[uint64]int{}
	var maxSeq uint64
	steps, _ := filepath.Glob(filepath.Join(c.dir, "ppo", "step-*"))
	for _, dir := range steps {
		s, err := learner.ReadState(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range s.Consumed {
			if prev, dup := seen[q]; dup {
				t.Errorf("stream position %d counted by steps %d and %d", q, prev, s.Step)
			}
			seen[q] = s.Step
			maxSeq = max(maxSeq, q)
		}
	}
	// A killed learner's last fetch stays unacknowledged until AckWait, so its positions are
	// gaps below the restarted learner's if the run ends first; they are still pending, never lost.
	gaps := int64(maxSeq) - int64(len(seen))
	if int64(len(seen)) != counted || (gaps != 0 && !(killed.learner && gaps <= int64(ci.NumAckPending))) {
		t.Errorf("checkpoints account for %d positions up to %d (%d gaps, %d pending); the totals %+v count %d",
			len(seen), maxSeq, gaps, ci.NumAckPending, tot, counted)
	}
	// A server killed with SIGKILL may forget acknowledgements it had not written out; it then
	// redelivers them and the learner drops them. Otherwise its books must match ours.
	acked := int64(ci.Delivered.Stream) - int64(ci.NumAckPending)
	if counted != acked && !(serverKilled && counted > acked) {
		t.Errorf("learner totals %+v add up to %d; the consumer acknowledged %d (delivered up to %d, %d pending)", tot, counted, acked, ci.Delivered.Stream, ci.NumAckPending)
	}
	if tot.Trained+tot.Filtered != int64(c.steps*c.batch) {
		t.Errorf("trained on %d (+%d filtered), want %d steps x %d", tot.Trained, tot.Filtered, c.steps, c.batch)
	}
	if st.Version != int64(c.steps) {
		t.Errorf("final version %d", st.Version)
	}
	pols, err := bus.OpenPolicies(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := pols.Get(ctx, c.run); err != nil || p.Version != int64(c.steps) {
		t.Errorf("policy KV: %+v, %v", p, err)
	}
	t.Logf("stream %d trajectories (%d counted by clean workers), learner %+v, consumer delivered %d, pending %d, redelivered %d",
		lines, published, tot, ci.Delivered.Stream, ci.NumAckPending, ci.NumRedelivered)
}

// faultSeed makes the random fault points reproducible: SPATEST_FAULT_SEED=N replays a failure.
func faultRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SPATEST_FAULT_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("fault points from SPATEST_FAULT_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, 0))
}

// TestClusterOfProcesses runs a short PPO run as separate processes (a NATS server, two env
// hosts, an inference server, two rollout workers and a learner), first on spa bus and then on
// Debian's nats-server when it is installed.
func TestClusterOfProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	servers := []struct{ name, bin string }{{"spa bus", ""}, {"nats-server", natsServerBinary()}}
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel() // as TestClusterFaults' clusters
			if s.name == "nats-server" && s.bin == "" {
				t.Skip("nats-server is not installed (apt-get install nats-server; make setup installs it)")
			}
			c := newCluster(t, s.bin)
			c.startLearner(false)
			c.finish(faults{})
		})
	}
}

// TestClusterFaults kills one part of a running cluster with SIGKILL at a random point and checks
// that the run finishes with its books straight.
func TestClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	r := faultRand(t)
	var busDown time.Duration
	cases := []struct {
		name  string
		fault func(c *cluster) faults
	}{
		{"rollout worker", func(c *cluster) faults {
			c.workers[0].kill()
			// The same worker name again, as a supervisor would restart it: its trajectory ids
			// must not collide with its predecessor's.
			c.workers[0] = c.startWorker(0)
			return faults{workers: 1}
		}},
		{"env host", func(c *cluster) faults {
			c.envs[0].kill()
			return faults{}
		}},
		{"learner", func(c *cluster) faults {
			c.learner.kill()
			c.startLearner(true)
			return faults{learner: true}
		}},
		{"nats server", func(c *cluster) faults {
			c.bus.kill()
			time.Sleep(busDown)
			c.startBus()
			return faults{bus: true}
		}},
	}
	// The clusters run side by side (71 s one after another, 47 s together on an idle 2-core
	// machine; the same either way beside a CPU-bound process): much of a cluster's time is its
	// processes waiting on one another (acknowledgement timeouts, reconnects), which the other
	// clusters fill. The fault points are drawn up front, in order, so a seed still names the
	// same points.
	type point struct {
		at    int
		delay time.Duration
	}
	points := make([]point, len(cases))
	for i := range points {
		points[i] = point{1 + r.IntN(clusterSteps-2), time.Duration(r.IntN(1500)) * time.Millisecond}
	}
	busDown = time.Duration(r.IntN(1500)) * time.Millisecond
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, "")
			c.startLearner(false)
			at, delay := points[i].at, points[i].delay
			c.waitStep(at, testdeadline.Remaining(t))
			time.Sleep(delay)
			t.Logf("killing the %s %s after step %d", tc.name, delay, at)
			c.finish(tc.fault(c))
		})
	}
}

// TestClusterAuth starts a bus that wants a token and a server that wants API and admin keys, as
// separate processes; clients with wrong or missing credentials fail fast with a message that
// names what to fix, and the right ones work.
func TestClusterAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny")
	if code, _, errOut := spa(t, "model", "init", "--out", model, "--layers", "2", "--vocab", "400", "--corpus-seeds", "5"); code != 0 {
		t.Fatal(errOut)
	}
	busAddr := freePort(t)
	busProc := startProc(t, "bus", "bus", "--listen", busAddr, "--store", filepath.Join(dir, "nats"), "--set", "bus.token=sesame")
	busProc.waitOutput(t, "JetStream on", testdeadline.Remaining(t))
	addr := freePort(t)
	endpoint := "http://" + addr + "/v1"
	serve := startProc(t, "serve", "serve", "--model", model, "--listen", addr, "--threads", "1", "--api-key", "k-api", "--admin-key", "k-admin",
		"--set", "server.max_model_len=1024", "--set", "server.kv_cache_mb=64")
	serve.waitOutput(t, "spa serve: ", testdeadline.Remaining(t))

	url := "nats://" + busAddr
	rollout := func(busToken string, groups int) []string {
		args := []string{"rollout", "--endpoint", endpoint, "--bus", url, "--run", "a1", "--tokenizer", model, "--groups", strconv.Itoa(groups),
			"--set", "rollout.group_size=2", "--set", "rollout.max_tokens=16", "--set", "rollout.max_turns=1", "--workers", "2"}
		if busToken != "" {
			args = append(args, "--set", "bus.token="+busToken)
		}
		return args
	}
	cases := []struct {
		name, apiKey string
		args         []string
		want         string
	}{
		{"wrong bus token", "k-api", rollout("nope", 1), "rejected token (bus.token)"},
		{"no bus credentials", "k-api", rollout("", 1), "rejected no credentials"},
		// --groups 0 plays until interrupted: the refused key must stop it by itself.
		{"wrong API key", "nope", rollout("sesame", 0), "unauthorized (401; check the API key"},
		{"no API key", "", rollout("sesame", 0), "unauthorized (401; check the API key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OPENAI_API_KEY", tc.apiKey)
			start := time.Now()
			code, _, errOut := spa(t, tc.args...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d; want an error with %q:\n%s", code, tc.want, errOut)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("failing took %s", d)
			}
		})
	}

	// The right keys play; a learner with the API key instead of the admin key cannot load
	// weights and says so.
	t.Setenv("OPENAI_API_KEY", "k-api")
	if code, out, errOut := spa(t, rollout("sesame", 1)...); code != 0 || !strings.Contains(out, "episodes 2") {
		t.Fatalf("rollout with the right keys: %d %s %s", code, out, errOut)
	}
	start := time.Now()
	code, _, errOut := spa(t, "learn", "--stage", "ppo", "--model", model, "--bus", url, "--set", "bus.token=sesame", "--run", "a1",
		"--sync", "spa="+endpoint, "--admin-key", "k-api", "--out", filepath.Join(dir, "ppo"),
		"--set", "learner.ppo.steps=1", "--set", "rollout.groups=1", "--set", "rollout.group_size=2", "--set", "learner.ppo.keep_group_ratio=1")
	if code == 0 || !strings.Contains(errOut, "401 Unauthorized (check the admin key") {
		t.Fatalf("learn with the API key as admin key: exit %d:\n%s", code, errOut)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("failing took %s", d)
	}
}
