package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/torchrt"
)

func TestMain(m *testing.M) {
	// The process tests (cluster_test.go) run this binary as the spa command.
	if os.Getenv(cliEnv) == "1" {
		main()
	}
	torchrt.RunTests(m)
}

// spa runs the CLI in-process and returns its exit code and output.
func spa(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := execute(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := spa(t, "version")
	if code != 0 || !strings.HasPrefix(out, "spa ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: code %d, output %q", code, out)
	}
}

func TestConfigPrintLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "spa.yaml")
	os.WriteFile(file, []byte("rollout:\n  workers: 3\n  groups: 4\n  group_size: 5\n  max_turns: 6\n"), 0o644)
	t.Setenv("SPA_ROLLOUT_GROUPS", "40")
	t.Setenv("SPA_ROLLOUT_GROUP_SIZE", "50")
	t.Setenv("SPA_ROLLOUT_MAX_TURNS", "60")
	code, out, errOut := spa(t, "config", "print", "--config", file,
		"--set", "rollout.group_size=500", "--set", "rollout.max_turns=600", "--workers", "9", "--set", "rollout.workers=10")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"  workers: 10 ",     // --set beats the named flag, which beats the file
		"  groups: 40 ",      // env beats file
		"  group_size: 500 ", // flag beats env
		"  max_turns: 600 ",
		"  max_tokens: 256 ", // default
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestConfigPrintEnvOnly(t *testing.T) {
	t.Setenv("SPA_ROLLOUT_WORKERS", "7")
	code, out, _ := spa(t, "config", "print")
	if code != 0 || !strings.Contains(out, "workers: 7") {
		t.Errorf("exit %d, output lacks workers: 7:\n%s", code, out)
	}
}

func TestConfigPrintErrorsNameTheKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(file, []byte("rollout:\n  wrkers: 4\nlearner:\n  sft:\n    lr: 0\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"file", []string{"config", "print", "--config", file}, []string{"rollout.wrkers: unknown key", "learner.sft.lr: must be > 0"}},
		{"flag", []string{"config", "print", "--workers", "zero"}, []string{`rollout.workers: must be an integer, got "zero" (from the command line)`}},
		{"set syntax", []string{"config", "print", "--set", "rollout.workers"}, []string{"want key=value"}},
		{"missing file", []string{"config", "print", "--config", file + ".nope"}, []string{"bad.yaml.nope"}},
	} {
		code, _, errOut := spa(t, tc.args...)
		if code == 0 {
			t.Errorf("%s: exit 0, want failure", tc.name)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, w, errOut)
			}
		}
	}
}

func TestCommonFlagsNameKnownKeys(t *testing.T) {
	for _, f := range commonFlags {
		if _, ok := config.Lookup(f.key); !ok {
			t.Errorf("--%s is bound to unknown key %s", f.flag, f.key)
		}
	}
}

func TestDoctorPasses(t *testing.T) {
	code, out, errOut := spa(t, "doctor")
	if code != 0 {
		t.Fatalf("doctor failed (%d):\n%s%s", code, out, errOut)
	}
	for _, name := range []string{"go", "libtorch", "blas", "gpu", "malloc", "threads", "autograd", "nats"} {
		if !strings.Contains(out, "\n"+name) && !strings.HasPrefix(out, name) {
			t.Errorf("doctor output has no %s line:\n%s", name, out)
		}
	}
	if strings.Contains(out, "FAIL") {
		t.Errorf("doctor printed FAIL but exited 0:\n%s", out)
	}
	t.Log("\n" + out)
}

// A real failure: the NATS store path is under a regular file, so JetStream cannot start.
func TestDoctorFailsWithSpecificMessage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(file, nil, 0o644)
	code, out, errOut := spa(t, "doctor", "--store", filepath.Join(file, "store"))
	if code == 0 {
		t.Fatalf("doctor passed with an unusable store:\n%s", out)
	}
	if !strings.Contains(out, "nats      FAIL") || !strings.Contains(errOut, "1 of 8 checks failed") || !strings.Contains(errOut, "nats: ") {
		t.Errorf("failure not reported specifically:\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
}

func TestRunDoctorReportsEveryFailure(t *testing.T) {
	var out bytes.Buffer
	err := runDoctor(context.Background(), &out, []check{
		{"a", func(context.Context) (status, string) { return ok, "fine" }},
		{"b", func(context.Context) (status, string) { return warn, "slow" }},
		{"c", func(context.Context) (status, string) { return fail, "broken" }},
		{"d", func(context.Context) (status, string) { return fail, "also broken" }},
	})
	if err == nil || !strings.Contains(err.Error(), "2 of 4 checks failed") || !strings.Contains(err.Error(), "d: also broken") {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(out.String(), "b         WARN  slow") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestTokenizeCommand(t *testing.T) {
	tok := "../../../shared/testdata/tokenizer/qwen3"
	if _, err := os.Stat(tok); err != nil {
		t.Skipf("shared tokenizer fixtures not found: %v", err)
	}
	run := func(stdin string, args ...string) (int, string, string) {
		root := newRootCmd(nil, nil)
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetIn(strings.NewReader(stdin))
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			return 1, out.String(), err.Error()
		}
		return 0, out.String(), ""
	}
	code, out, errOut := run("{\"text\":\"Hello world\"}\n{\"text\":\"<|im_start|>\"}\n", "tokenize", "--tokenizer", tok)
	if code != 0 || out != "{\"ids\":[9707,1879]}\n{\"ids\":[151644]}\n" {
		t.Fatalf("encode: %d %q %s", code, out, errOut)
	}
	code, out, _ = run("{\"ids\":[9707,1879,151645]}\n", "tokenize", "--tokenizer", tok+"/tokenizer.json", "--decode", "--skip-special-tokens")
	if code != 0 || out != "{\"text\":\"Hello world\"}\n" {
		t.Fatalf("decode: %d %q", code, out)
	}
	if code, _, errOut := run("{\"txt\":1}\n", "tokenize", "--tokenizer", tok); code == 0 || !strings.Contains(errOut, "line 1") {
		t.Errorf("bad line: %d %s", code, errOut)
	}
}

// TestLibtorchUsesEveryCoreUnlessTold: spa sets OMP_NUM_THREADS for libtorch when the user did
// not, and libtorch must still use it after spa takes it out of the environment (it once fell
// back to c10's default of half the hardware threads); --threads lowers it.
func TestLibtorchUsesEveryCoreUnlessTold(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OMP_NUM_THREADS=") {
			env = append(env, kv)
		}
	}
	env = append(env, cliEnv+"=1")
	n := runtime.NumCPU()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"doctor"}, fmt.Sprintf("%d intra-op threads (OMP_NUM_THREADS=%d set by spa", n, n)},
		{[]string{"doctor", "--threads", "1"}, "1 intra-op threads"},
	} {
		cmd := exec.Command(exe, tc.args...)
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("spa %v without OMP_NUM_THREADS: want %q in\n%s", tc.args, tc.want, out)
		}
	}
}

func TestBenchRefusesUnknownPresetsAndDevices(t *testing.T) {
	info, err := torchrt.ReadInfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "model", "--preset", "huge"}, `unknown model preset "huge"`},
		{[]string{"bench", "learner", "--device", "tpu"}, `--device: device "tpu": want cpu, cuda or cuda:N`},
		{[]string{"bench", "model", "--device", "cuda:0"}, `--device: device "cuda:0": this libtorch`},
	} {
		if info.GPUProblem() == "" && strings.HasPrefix(tc.args[len(tc.args)-1], "cuda") {
			continue // this machine has a GPU, so the benchmark would run
		}
		code, _, errOut := spa(t, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("spa %s: exit %d, want an error saying %q:\n%s", strings.Join(tc.args, " "), code, tc.want, errOut)
		}
	}
}

func TestBenchWritesACPUProfile(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "cpu.pprof")
	code, _, errOut := spa(t, "bench", "envs", "--duration", "100ms", "--cpuprofile", profile)
	if code != 0 || !strings.Contains(errOut, "CPU profile: "+profile) {
		t.Fatalf("bench envs --cpuprofile: exit %d\n%s", code, errOut)
	}
	if st, err := os.Stat(profile); err != nil || st.Size() == 0 {
		t.Errorf("no profile written: %v", err)
	}
}
