package sokoban

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/envtest"
)

// parseLevel reads a grid in the rendering's own symbols.
func parseLevel(lines []string) (Level, error) {
	var l Level
	players := 0
	for r, line := range lines {
		row := []bool{}
		for c, ch := range []rune(line) {
			p := envs.Pos{R: r, C: c}
			row = append(row, ch == '#')
			switch ch {
			case '#', '_':
			case 'O':
				l.Targets = append(l.Targets, p)
			case 'X':
				l.Boxes = append(l.Boxes, p)
			case '√':
				l.Boxes = append(l.Boxes, p)
				l.Targets = append(l.Targets, p)
			case 'P':
				l.Player, players = p, players+1
			case 'S':
				l.Player, players = p, players+1
				l.Targets = append(l.Targets, p)
			default:
				return l, fmt.Errorf("unknown symbol %q at %v", ch, p)
			}
		}
		l.Walls = append(l.Walls, row)
	}
	if players != 1 {
		return l, fmt.Errorf("%d players", players)
	}
	return l, nil
}

func TestSteps(t *testing.T) {
	envtest.Run(t, "testdata/steps.txt", func(initial []string) (envs.Env, error) {
		l, err := parseLevel(initial)
		if err != nil {
			return nil, err
		}
		e := New(Config{Rows: len(l.Walls), Cols: len(l.Walls[0]), Boxes: len(l.Boxes), MaxActions: 10})
		e.Load(l)
		return e, nil
	})
}

// solve finds the fewest moves that place every box, by breadth-first search over (player, boxes)
// written independently of the environment's Step. It returns -1 when no solution exists within
// limit moves. A state is the player's cell and the boxes' cells (row*cols+col), sorted since
// boxes are interchangeable, packed 9 bits a cell into one uint64: a sweep of 1,000 two-box
// levels spent half its time hashing and allocating string keys.
func solve(t *testing.T, l Level, limit int) int {
	t.Helper()
	const maxBoxes = 6
	rows, cols, n := len(l.Walls), len(l.Walls[0]), len(l.Boxes)
	if rows*cols > 1<<9 || n > maxBoxes {
		t.Fatalf("solve packs a state into 64 bits: a %dx%d room with %d boxes does not fit", rows, cols, n)
	}
	wall, target := make([]bool, rows*cols), make([]bool, rows*cols)
	for r, row := range l.Walls {
		for c, w := range row {
			wall[r*cols+c] = w
		}
	}
	for _, p := range l.Targets {
		target[p.R*cols+p.C] = true
	}
	type node struct {
		player int
		boxes  [maxBoxes]int
	}
	pack := func(s node) uint64 {
		sorted := s.boxes
		slices.Sort(sorted[:n])
		k := uint64(s.player)
		for _, b := range sorted[:n] {
			k = k<<9 | uint64(b)
		}
		return k
	}
	done := func(s node) bool {
		for _, b := range s.boxes[:n] {
			if !target[b] {
				return false
			}
		}
		return true
	}
	start := node{player: l.Player.R*cols + l.Player.C}
	for i, b := range l.Boxes {
		start.boxes[i] = b.R*cols + b.C
	}
	if done(start) {
		return 0
	}
	seen := map[uint64]struct{}{pack(start): {}}
	frontier := []node{start}
	// Up, down, left, right; the border is wall, so a step never leaves the room.
	moves := [4]int{-cols, cols, -1, 1}
	for depth := 1; depth <= limit && len(frontier) > 0; depth++ {
		var next []node
		for _, s := range frontier {
			for _, d := range moves {
				m := node{player: s.player + d, boxes: s.boxes}
				if wall[m.player] {
					continue
				}
				if i := slices.Index(m.boxes[:n], m.player); i >= 0 {
					q := m.player + d
					if wall[q] || slices.Contains(m.boxes[:n], q) {
						continue
					}
					m.boxes[i] = q
				}
				k := pack(m)
				if _, ok := seen[k]; ok {
					continue
				}
				if done(m) {
					return depth
				}
				seen[k] = struct{}{}
				next = append(next, m)
			}
		}
		frontier = next
	}
	return -1
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
				moves := solve(t, l, 200)
				if moves < 0 {
					t.Fatalf("seed %d: unsolvable level:\n%s", seed, render(l))
				}
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
	l, _ := parseLevel([]string{"#####", "#PXO#", "#####"})
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
