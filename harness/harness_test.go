package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/config"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/internal/testdeadline"
	"github.com/spa-rl/spa/torchrt"
)

func TestMain(m *testing.M) { torchrt.RunTests(m) }

func smokeConfig(t *testing.T) config.Config {
	t.Helper()
	values, err := Preset("smoke")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Sources{Preset: values, Flags: map[string]string{"run.preset": "smoke"}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// countLines counts the non-empty lines of a file holding s.
func countLines(t *testing.T, path, s string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// TestSmokePipelineEndToEndWithResume runs the smoke preset through every stage over real NATS,
// real HTTP and real libtorch, interrupts it during PPO, resumes it, and checks the artefacts:
// the report and plots, servable checkpoints, trajectory counts with no duplicates, and a resumed
// run that continued instead of restarting.
func TestSmokePipelineEndToEndWithResume(t *testing.T) {
	cfg := smokeConfig(t)
	dir := filepath.Join(t.TempDir(), "smoke")
	const id = "smoke"
	// Validation on another range than the default, as tuning runs use.
	cfg.Run.ValSeed = 500

	// A validation range that reaches the training puzzles is refused before anything starts.
	bad := cfg
	bad.Run.ValSeed = trainSeedBase - 2
	if _, err := Run(context.Background(), Options{Config: bad, Dir: filepath.Join(t.TempDir(), "bad"), ID: "bad"}); err == nil || !strings.Contains(err.Error(), "reach the training puzzles") {
		t.Errorf("validation seeds into the training range: %v", err)
	}

	// interrupt runs (or resumes) the pipeline and cancels it once file holds marker.
	interrupt := func(resume bool, file, marker string) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stuck bool
		wait := testdeadline.Remaining(t)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			deadline := time.Now().Add(wait)
			for ctx.Err() == nil {
				if data, err := os.ReadFile(filepath.Join(dir, file)); err == nil && bytes.Contains(data, []byte(marker)) {
					cancel()
					return
				}
				if time.Now().After(deadline) {
					stuck = true
					cancel()
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		_, err := Run(ctx, Options{Config: cfg, Dir: dir, ID: id, Resume: resume})
		cancel()
		<-watched
		switch {
		case stuck:
			t.Fatalf("no %s in %s within %s: the run is stuck", marker, file, wait.Round(time.Second))
		case err == nil:
			t.Fatal("the interrupted run finished")
		}
		t.Logf("interrupted: %v", err)
	}
	// Once between spa's evaluations and its first PPO step (the server must then be given the
	// SFT checkpoint, not whatever it holds under a similar name), and once after that step.
	interrupt(false, "state.json", `"spa:eval-start"`)
	interrupt(true, "metrics.jsonl", `"stage":"ppo"`)
	before, err := loadState(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if before.done("spa:ppo") || !before.done("spa:sft") {
		t.Fatalf("interrupted at the wrong place: %v", before.Stages)
	}
	if _, err := Run(context.Background(), Options{Config: cfg, Dir: dir, ID: id}); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("starting over a run directory: %v", err)
	}

	rep, err := Run(context.Background(), Options{Config: cfg, Dir: dir, ID: id, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := loadState(dir, true)
	for _, stage := range []string{"init", "warmup", "selfplay", "spa:sft", "spa:eval-base"} {
		if !after.Stages[stage].Finished.Equal(before.Stages[stage].Finished) {
			t.Errorf("stage %s ran again after resume", stage)
		}
	}
	// Every PPO step of each method was trained once: the resumed run continued from the checkpoint.
	metrics := filepath.Join(dir, "metrics.jsonl")
	for _, m := range []string{"spa", "vanilla"} {
		if n := countLines(t, metrics, `"method":"`+m+`","report"`); n != cfg.Learner.PPO.Steps {
			t.Errorf("%s: %d PPO step records, want %d (one per step)", m, n, cfg.Learner.PPO.Steps)
		}
	}

	report, err := os.ReadFile(rep.Path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(report), "| vanilla | untrained") {
		t.Error("the untrained model was evaluated twice")
	}
	// The untrained model is played once per puzzle, so its row has no Pass@k.
	if !regexp.MustCompile(`\| spa \| untrained \(as initialised\) \| [^|]+ \| – \|`).Match(report) {
		t.Errorf("the untrained row should show Pass@1 and no Pass@k:\n%s", report)
	}
	for _, want := range []string{"| spa | untrained (as initialised) |", "| spa | base (format warm-up only) |", "| spa | after world-model SFT |", "| spa | after PPO |", "| vanilla | after PPO |", "![success](success.png)",
		"![behaviour](behaviour.png)", "| spa − vanilla after PPO | ", "| spa after PPO − its PPO start | ", "Validation: 4 fixed puzzles (seeds 500..503)",
		"Model: a tiny Qwen2 trained from scratch (domain tokenizer, format warm-up) (Qwen2ForCausalLM: 4 layers, hidden 128", "served by the embedded inference server; self-play explored by random."} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	for _, plot := range rep.Plots {
		f, err := os.Open(plot)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 300 {
			t.Errorf("plot %s: %v", plot, err)
		}
	}
	if len(rep.Plots) != 5 {
		t.Errorf("%d plots", len(rep.Plots))
	}
	// Every stage has its wall time, in the report and in state.json.
	timed := map[string]bool{}
	for _, st := range rep.Timings {
		timed[st.Stage] = st.Seconds > 0
	}
	for _, stage := range []string{"init", "warmup", "selfplay", "spa:sft", "spa:eval-init", "spa:eval-base", "spa:ppo", "spa:eval-final", "vanilla:ppo", "vanilla:eval-final"} {
		if !timed[stage] {
			t.Errorf("no wall time for stage %s: %+v", stage, rep.Timings)
		}
	}
	if !strings.Contains(string(report), "## Time") || !strings.Contains(string(report), "| spa:ppo | ") {
		t.Errorf("report lacks the timing table:\n%s", report)
	}

	// The final checkpoints are servable by spa serve's loader.
	for _, m := range []string{"spa", "vanilla"} {
		ckpt := after.Stages[m+":ppo"].Checkpoint
		srv, err := inference.Open(context.Background(), ckpt, inference.Options{MaxModelLen: 256, KVCacheMB: 16}, api.Options{})
		if err != nil {
			t.Errorf("serve %s: %v", ckpt, err)
			continue
		}
		srv.Close()
	}

	// Trajectory counts: self-play in its file, and each method's PPO stream holds exactly
	// steps x groups x group size distinct trajectories.
	if n := countLines(t, filepath.Join(dir, "selfplay.jsonl"), `"id"`); n != cfg.Run.SelfPlay {
		t.Errorf("selfplay.jsonl has %d trajectories, want %d", n, cfg.Run.SelfPlay)
	}
	b, err := bus.Open(context.Background(), bus.Options{StoreDir: bus.DefaultStoreDir(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, m := range []string{"spa", "vanilla"} {
		var buf bytes.Buffer
		n, err := bus.ExportTrajectories(context.Background(), b, id+"-"+m, &buf, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(cfg.Learner.PPO.Steps * cfg.Rollout.Groups * cfg.Rollout.GroupSize)
		ids := map[string]bool{}
		// The run's seed picks its range of training puzzles: 1,100,000 on for seed 1.
		first := int64(1_000_000 + 100_000*cfg.Run.Seed)
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var tr struct {
				ID   string
				Seed int64
			}
			_ = json.Unmarshal([]byte(line), &tr)
			if ids[tr.ID] {
				t.Errorf("%s: trajectory %s twice", m, tr.ID)
			}
			ids[tr.ID] = true
			if tr.Seed < first || tr.Seed >= first+100_000 {
				t.Errorf("%s: trajectory %s on puzzle %d, outside seed %d's training range from %d", m, tr.ID, tr.Seed, cfg.Run.Seed, first)
			}
		}
		if n != want {
			t.Errorf("%s: %d trajectories in the stream, want %d", m, n, want)
		}
	}
}
