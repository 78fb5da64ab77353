package harness

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spa-rl/spa/config"
)

// writeRun makes a finished run directory with the given seed and per-puzzle successes (k = 2,
// 4 puzzles) for spa's start and final policy and vanilla's base and final policy.
func writeRun(t *testing.T, seed int, edit func(*config.Config), spaStart, spaFinal, vanBase, vanFinal []int) string {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Run.Seed, cfg.Run.Methods, cfg.Run.ValPuzzles, cfg.Run.ValK = seed, []string{"spa", "vanilla"}, 4, 2
	if edit != nil {
		edit(&cfg)
	}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eval := func(successes []int) *stageResult {
		if successes == nil {
			return nil
		}
		e := Eval{K: 2, Puzzles: len(successes), Successes: successes, MeanActions: 4, ActionInfo: 0.25 + 0.05*float64(seed), ActionInfoChance: 0.25, ActionInfoP: 0.08 - 0.02*float64(seed)}
		for _, c := range successes {
			e.Pass1 += float64(c) / 2 / float64(len(successes))
			if c > 0 {
				e.PassK += 1 / float64(len(successes))
			}
		}
		return &stageResult{Eval: &e}
	}
	st := state{Stages: map[string]*stageResult{}}
	for stage, s := range map[string][]int{"spa:eval-base": vanBase, "spa:eval-start": spaStart, "spa:eval-final": spaFinal, "vanilla:eval-base": vanBase, "vanilla:eval-final": vanFinal} {
		if r := eval(s); r != nil {
			st.Stages[stage] = r
		}
	}
	data, _ = json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, "state.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSummarize(t *testing.T) {
	// Seed 1: spa gains 2 successes of 8 samples (+25 points of Pass@1); seed 2: +50 points.
	a := writeRun(t, 1, nil, []int{0, 0, 1, 2}, []int{1, 1, 1, 2}, []int{0, 0, 1, 1}, []int{0, 0, 1, 1})
	b := writeRun(t, 2, nil, []int{0, 0, 0, 2}, []int{2, 2, 0, 2}, []int{0, 0, 1, 1}, []int{0, 0, 0, 1})
	md, err := Summarize([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"2 runs of sokoban (preset quick; seed 1, seed 2); validation on puzzles 0..3 x 2 samples",
		// spa after PPO: Pass@1 62.5 and 75, mean 68.75, sd 8.84; Pass@2 100 and 75.
		"| spa | after PPO | 68.8 ± 8.8 | 87.5 ± 17.7 | 0.0 ± 0.0 | 4.0 ± 0.0 | 0.0 ± 0.0 | +0.075 ± 0.035 (p < 0.05 in 1 of 2) |",
		"| spa | after world-model SFT | 31.2 ± 8.8 | 37.5 ± 17.7 |",
		"| vanilla | after PPO | 18.8 ± 8.8 | 37.5 ± 17.7 |",
		// spa after PPO − its start: +25 and +50 points of Pass@1, +50 both times of Pass@2.
		"| spa after PPO − its PPO start | +25.0 [",
		"| +37.5 ± 17.7 / +50.0 ± 0.0 | 0 / 0 of 2 |",
		// spa − vanilla: every puzzle's difference is ≥ 0 and one is > 0 in both runs, so
		// both Pass@1 intervals lie above 0.
		"| +50.0 ± 17.7 / +50.0 ± 0.0 | 2 / 0 of 2 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "differ in") {
		t.Errorf("runs that differ only in their seed are said to differ:\n%s", md)
	}

	// A sweep names what it swept.
	c := writeRun(t, 3, func(c *config.Config) { c.Learner.PPO.ActorLR = 2e-4 }, []int{0, 0, 1, 2}, []int{1, 1, 1, 2}, []int{0, 0, 1, 1}, []int{0, 0, 1, 1})
	if md, err := Summarize([]string{a, c}); err != nil || !strings.Contains(md, "The runs differ in: learner.ppo.actor_lr.") {
		t.Errorf("sweep: %v\n%s", err, md)
	}

	// Runs that are not of the same puzzles, or not finished, are refused.
	other := writeRun(t, 3, func(c *config.Config) { c.Run.ValSeed = 10000 }, []int{0, 0, 1, 2}, []int{1, 1, 1, 2}, []int{0, 0, 1, 1}, []int{0, 0, 1, 1})
	unfinished := writeRun(t, 4, nil, []int{0, 0, 1, 2}, []int{1, 1, 1, 2}, []int{0, 0, 1, 1}, nil)
	for _, tc := range []struct {
		name string
		dirs []string
		want string
	}{
		{"other puzzles", []string{a, other}, "differ in run.val_seed (0, 10000)"},
		{"unfinished", []string{a, unfinished}, "vanilla has no evaluation after PPO yet (finish it with spa run --resume"},
		{"not a run", []string{a, t.TempDir()}, "is it a run directory?"},
		{"none", nil, "no run directories"},
	} {
		if _, err := Summarize(tc.dirs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
