package frozenlake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/spa-rl/spa/envs"
)

// gymTable is testdata/gymnasium.json: Gymnasium FrozenLake-v1's maps and transition tables
// (P[state][action] = [probability, next state, reward, terminated]), written by
// sdk/python/tools/frozenlake_table.py.
type gymTable struct {
	Gymnasium string
	Actions   []string
	Maps      map[string]struct {
		Desc []string
		P    map[string]map[string][][4]any
	}
}

func loadGymTable(t *testing.T) gymTable {
	t.Helper()
	data, err := os.ReadFile("testdata/gymnasium.json")
	if err != nil {
		t.Fatal(err)
	}
	var g gymTable
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// outcome is where one action can lead: the next cell, its reward and whether the episode ends.
type outcome struct {
	next      int
	reward    float64
	terminate bool
}

// TestTransitionsMatchGymnasium loads Gymnasium's own maps into spa's FrozenLake and compares,
// for every cell and action, the distribution of outcomes (next cell, reward, end) with
// Gymnasium's transition table: the dynamics are the same. By design spa differs in what the
// paper sets (docs/envs.md): its maps are generated from the seed (Gymnasium's are fixed unless
// generated), its budget is 10 actions (Gymnasium truncates at 100 or 200 steps), and its slips
// come from its own seeded generator, so the same seed does not give the same slips.
func TestTransitionsMatchGymnasium(t *testing.T) {
	g := loadGymTable(t)
	if len(g.Maps) != 2 {
		t.Fatalf("maps %v", len(g.Maps))
	}
	for name, gm := range g.Maps {
		n := len(gm.Desc)
		m := Map{Size: n, Holes: make([][]bool, n)}
		for r, row := range gm.Desc {
			m.Holes[r] = make([]bool, n)
			for c, ch := range row {
				switch ch {
				case 'S':
					m.Start = envs.Pos{R: r, C: c}
				case 'G':
					m.Goal = envs.Pos{R: r, C: c}
				case 'H':
					m.Holes[r][c] = true
				}
			}
		}
		compared := 0
		for s := range n * n {
			here := envs.Pos{R: s / n, C: s % n}
			if m.Holes[here.R][here.C] || here == m.Goal {
				continue // terminal in both: no action is taken there
			}
			for a, action := range g.Actions {
				want := map[outcome]float64{}
				for _, tr := range gm.P[fmt.Sprint(s)][fmt.Sprint(a)] {
					want[outcome{int(tr[1].(float64)), tr[2].(float64), tr[3].(bool)}] += tr[0].(float64)
				}
				got := map[outcome]float64{}
				for slip := range 3 {
					e := New(n)
					e.Load(m, 0)
					e.player = here
					e.slip = func() int { return slip }
					st, err := e.Step(action)
					if err != nil || !st.Valid {
						t.Fatalf("%s cell %d %s: %+v %v", name, s, action, st, err)
					}
					got[outcome{e.player.R*n + e.player.C, st.Reward, st.Done}] += 1.0 / 3
				}
				if len(got) != len(want) {
					t.Errorf("%s cell %d %s: spa %v, Gymnasium %v", name, s, action, got, want)
					continue
				}
				for o, p := range want {
					if math.Abs(got[o]-p) > 1e-9 {
						t.Errorf("%s cell %d %s: outcome %+v has probability %.4f in spa, %.4f in Gymnasium", name, s, action, o, got[o], p)
					}
				}
				compared++
			}
		}
		t.Logf("%s: %d cell-action pairs match Gymnasium %s", name, compared, g.Gymnasium)
	}
}

// TestGymnasiumTableIsCurrent regenerates the fixture with the SDK's pinned Gymnasium, when its
// virtual environment is there (scripts/pyenv.sh).
func TestGymnasiumTableIsCurrent(t *testing.T) {
	python := filepath.Join("..", "..", "sdk", "python", ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		t.Skip("the Python SDK's virtual environment is missing; run scripts/pyenv.sh to check the fixture against Gymnasium itself")
	}
	out, err := exec.Command(python, filepath.Join("..", "..", "sdk", "python", "tools", "frozenlake_table.py")).Output()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("testdata/gymnasium.json")
	if !bytes.Equal(out, want) {
		t.Error("testdata/gymnasium.json differs from what the pinned Gymnasium writes; regenerate it (see sdk/python/tools/frozenlake_table.py)")
	}
}
