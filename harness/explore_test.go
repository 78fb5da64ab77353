package harness

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
	_ "github.com/spa-rl/spa/envs/builtin"
	"github.com/spa-rl/spa/rollout"
)

// TestGuidedExplorer plays the quick preset's episodes (3 turns, up to 3 actions a turn) with the
// warm-up player at several skills: the random explorer solves few puzzles, a player that always
// follows the plan solves most, and success rises with skill in between.
func TestGuidedExplorer(t *testing.T) {
	probe, err := envs.New("sokoban", "")
	if err != nil {
		t.Fatal(err)
	}
	guide := probe.(envs.Planner)
	const puzzles = 300
	rate := map[float64]float64{}
	for _, skill := range []float64{0, 0.5, 1} {
		ex := NewExplorer(probe.Spec(), rollout.Base, 3, 1)
		ex.Guide, ex.Skill = guide, skill
		solved := 0
		for seed := range puzzles {
			env, err := envs.New("sokoban", "")
			if err != nil {
				t.Fatal(err)
			}
			tr, err := rollout.Play(context.Background(), env, ex, nil, rollout.EpisodeOptions{
				PromptOptions: rollout.PromptOptions{Mode: rollout.Base, Render: envs.Raw, MaxActionsPerTurn: 3},
				MaxTurns:      3, Seed: int64(seed), ID: fmt.Sprint(seed), Run: "guided",
			})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Success {
				solved++
			}
		}
		rate[skill] = float64(solved) / puzzles
		t.Logf("skill %.1f: %d/%d solved", skill, solved, puzzles)
	}
	if rate[0] > 0.25 || rate[1] < 0.6 || !(rate[0] < rate[0.5] && rate[0.5] < rate[1]) {
		t.Errorf("success by skill %v: want random below 25%%, full skill above 60%%, rising", rate)
	}
}

func TestWarmupGuide(t *testing.T) {
	for _, tc := range []struct {
		env     string
		skill   float64
		planner bool
		err     string
	}{
		{"sokoban", 0, false, ""},
		{"sokoban", 0.5, true, ""},
		{"frozenlake", 0, false, ""},
		{"frozenlake", 0.5, false, "frozenlake cannot plan"},
		{"no-such-env", 0.5, false, "needs a built-in environment"},
	} {
		t.Run(fmt.Sprintf("%s/%g", tc.env, tc.skill), func(t *testing.T) {
			p := &pipeline{spec: envs.Spec{Name: tc.env}}
			p.cfg.Run.WarmupSkill = tc.skill
			g, err := p.guide()
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("guide() error %v, want %q", err, tc.err)
			}
			if (g != nil) != tc.planner {
				t.Fatalf("guide() = %v, want a planner: %v", g, tc.planner)
			}
		})
	}
}
