package sokoban

import (
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/envtest"
)

func TestSteps(t *testing.T) {
	envtest.Run(t, "testdata/steps.txt", func(initial []string) (envs.Env, error) {
		l, err := ParseLevel(strings.Join(initial, "\n"))
		if err != nil {
			return nil, err
		}
		e := New(Config{Rows: len(l.Walls), Cols: len(l.Walls[0]), Boxes: len(l.Boxes), MaxActions: 10})
		e.Load(l)
		return e, nil
	})
}

func TestEveryLevelIsSolvable(t *testing.T) {
	if testing.Short() {
		t.Skip("a single-threaded sweep of 1,000 seeds, for the plain run; the race pass (-short) has nothing to find in it")
	}
	for _, tc := range []struct {
		variant string
		seeds   int
	}{
		{"6x6-1box", 1000},
		{"10x10-2box", 1000},
	} {
		t.Run(tc.variant, func(t *testing.T) {
			cfg, err := ParseVariant(tc.variant)
			if err != nil {
				t.Fatal(err)
			}
			hist := map[int]int{}
			withinBudget := 0
			for seed := int64(0); seed < int64(tc.seeds); seed++ {
				l, err := Generate(cfg, seed)
				if err != nil {
					t.Fatal(err)
				}
				checkLevel(t, cfg, l, seed)
				plan, err := Solve(l, 200)
				if err != nil {
					t.Fatalf("seed %d: %v:\n%s", seed, err, render(l))
				}
				moves := len(plan)
				replay(t, cfg, l, plan)
				if moves == 0 {
					t.Fatalf("seed %d: level starts solved", seed)
				}
				hist[moves]++
				if moves <= cfg.MaxActions {
					withinBudget++
				}
			}
			t.Logf("%s: %d/%d levels solvable within the %d-action budget (%.1f%%); optimal solution lengths: %v",
				tc.variant, withinBudget, tc.seeds, cfg.MaxActions, 100*float64(withinBudget)/float64(tc.seeds), hist)
		})
	}
}

func checkLevel(t *testing.T, cfg Config, l Level, seed int64) {
	t.Helper()
	if len(l.Walls) != cfg.Rows || len(l.Walls[0]) != cfg.Cols || len(l.Boxes) != cfg.Boxes || len(l.Targets) != cfg.Boxes {
		t.Fatalf("seed %d: wrong shape or counts:\n%s", seed, render(l))
	}
	for r := 0; r < cfg.Rows; r++ {
		for c := 0; c < cfg.Cols; c++ {
			if (r == 0 || c == 0 || r == cfg.Rows-1 || c == cfg.Cols-1) && !l.Walls[r][c] {
				t.Fatalf("seed %d: border not walled:\n%s", seed, render(l))
			}
		}
	}
	occupied := map[envs.Pos]bool{l.Player: true}
	for _, b := range l.Boxes {
		if occupied[b] || l.Walls[b.R][b.C] {
			t.Fatalf("seed %d: box overlaps:\n%s", seed, render(l))
		}
		occupied[b] = true
	}
}

func render(l Level) string {
	e := New(Config{Rows: len(l.Walls), Cols: len(l.Walls[0]), Boxes: len(l.Boxes), MaxActions: 10})
	e.Load(l)
	return e.Render(envs.Coords)
}

func TestSameSeedSameGame(t *testing.T) {
	actions := strings.Fields("Up Left Down Right Right Up Left Down Down Right")
	for seed := int64(0); seed < 50; seed++ {
		a, _ := envtest.Play(New(Config{6, 6, 1, 10}), seed, actions)
		b, _ := envtest.Play(New(Config{6, 6, 1, 10}), seed, actions)
		if a != b {
			t.Fatalf("seed %d played twice differs:\n%s\n---\n%s", seed, a, b)
		}
	}
	distinct := map[string]bool{}
	for seed := int64(0); seed < 50; seed++ {
		l, _ := Generate(Config{6, 6, 1, 10}, seed)
		distinct[render(l)] = true
	}
	if len(distinct) < 45 {
		t.Errorf("only %d distinct levels from 50 seeds", len(distinct))
	}
}

func TestStepErrors(t *testing.T) {
	e := New(Config{6, 6, 1, 10})
	if _, err := e.Step("Up"); err != envs.ErrNotReset {
		t.Errorf("step before reset: %v", err)
	}
	l, err := ParseLevel("#####\n#PXO#\n#####")
	if err != nil {
		t.Fatal(err)
	}
	e.Load(l)
	if st, err := e.Step("Right"); err != nil || !st.Done || !st.Success {
		t.Fatalf("solving push: %+v %v", st, err)
	}
	if _, err := e.Step("Right"); err != envs.ErrEpisodeDone {
		t.Errorf("step after done: %v", err)
	}
}

func TestParseVariant(t *testing.T) {
	for v, ok := range map[string]bool{"6x6-1box": true, "10x10-2box": true, "8x8-3boxes": true, "6x6": false, "3x3-1box": false, "6x6-9box": false, "": false} {
		if _, err := ParseVariant(v); (err == nil) != ok {
			t.Errorf("ParseVariant(%q) err = %v", v, err)
		}
	}
}

// FuzzStep: any action text is either a valid move or an invalid action that changes nothing.
func FuzzStep(f *testing.F) {
	for _, s := range []string{"Up", "down", " LEFT ", "Right!", "", "up||down", "\x00", "√"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, action string) {
		e := New(Config{6, 6, 1, 10})
		if err := e.Reset(1); err != nil {
			t.Fatal(err)
		}
		before := e.Render(envs.Coords)
		st, err := e.Step(action)
		if err != nil {
			t.Fatal(err)
		}
		_, known := envs.ParseDirection(action)
		if st.Valid != known {
			t.Fatalf("%q: valid = %v, ParseDirection says %v", action, st.Valid, known)
		}
		if !st.Valid && (e.Render(envs.Coords) != before || st.Reward != 0 || st.Done) {
			t.Fatalf("invalid action %q changed the game: %+v", action, st)
		}
	})
}
