package sokoban

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
)

// replay plays plan through Step and fails unless the last action, and only it, solves the level.
func replay(t *testing.T, cfg Config, l Level, plan []string) {
	t.Helper()
	cfg.MaxActions = len(plan) + 1
	e := New(cfg)
	e.Load(l)
	for i, a := range plan {
		st, err := e.Step(a)
		if err != nil || !st.Valid {
			t.Fatalf("plan %v: action %d (%s) refused: %+v %v\n%s", plan, i, a, st, err, render(l))
		}
		if last := i == len(plan)-1; st.Success != last {
			t.Fatalf("plan %v: after action %d success is %v\n%s", plan, i, st.Success, render(l))
		}
	}
}

func TestSolveHandWorked(t *testing.T) {
	for _, tc := range []struct {
		name, grid string
		want       []string
		err        error
	}{
		{"one push", "#####\n#PXO#\n#####", []string{"Right"}, nil},
		{"step aside, push down", "######\n#P___#\n#_X__#\n#_O__#\n######", []string{"Right", "Down"}, nil},
		{"go round, push left", "######\n#P___#\n#O_X_#\n#____#\n######", []string{"Right", "Right", "Right", "Down", "Left", "Left"}, nil},
		{"already solved", "#####\n#P√_#\n#####", []string{}, nil},
		{"box in a corner", "#####\n#X_P#\n#__O#\n#####", nil, ErrNoPlan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ParseLevel(tc.grid)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Solve(l, 20)
			if !errors.Is(err, tc.err) || !slices.Equal(got, tc.want) {
				t.Fatalf("Solve = %v, %v; want %v, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestPlanFromEitherRendering(t *testing.T) {
	cfg, err := ParseVariant("6x6-1box")
	if err != nil {
		t.Fatal(err)
	}
	e := New(cfg)
	var _ envs.Planner = e
	for seed := int64(0); seed < 100; seed++ {
		l, err := Generate(cfg, seed)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Solve(l, 40)
		if err != nil {
			t.Fatal(err)
		}
		e.Load(l)
		for _, mode := range []envs.RenderMode{envs.Raw, envs.Coords} {
			got, err := e.Plan(e.Render(mode))
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("seed %d %s: Plan = %v, %v; Solve = %v", seed, mode, got, err, want)
			}
		}
		// Mid-episode: after the plan's first move the rest of it is still a shortest plan.
		if len(want) > 1 {
			if _, err := e.Step(want[0]); err != nil {
				t.Fatal(err)
			}
			rest, err := e.Plan(e.Render(envs.Raw))
			if err != nil || len(rest) != len(want)-1 {
				t.Fatalf("seed %d: after %s, Plan = %v, %v; want %d moves", seed, want[0], rest, err, len(want)-1)
			}
		}
	}
}

func TestParseLevelErrors(t *testing.T) {
	for name, text := range map[string]string{
		"no grid":      "Player (P) is at (1, 1).",
		"two players":  "#####\n#PXP#\n#####",
		"no player":    "#####\n#_XO#\n#####",
		"ragged":       "#####\n#PXO##\n#####",
		"empty string": "",
	} {
		if _, err := ParseLevel(text); err == nil {
			t.Errorf("%s: ParseLevel(%q) accepted", name, text)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: multi-line error %q", name, err)
		}
	}
}
