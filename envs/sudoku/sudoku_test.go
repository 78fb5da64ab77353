package sudoku

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/envtest"
)

func parseGrid(line string) (Grid, error) {
	var g Grid
	for _, row := range strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|") {
		var cells []int
		for _, f := range strings.Fields(row) {
			if f == "." {
				cells = append(cells, 0)
			} else {
				var v int
				if _, err := fmt.Sscanf(f, "%d", &v); err != nil {
					return nil, err
				}
				cells = append(cells, v)
			}
		}
		g = append(g, cells)
	}
	return g, nil
}

// bruteForce counts solutions by plain backtracking in reading order with its own rule check,
// independent of the package's solver.
func bruteForce(g Grid, limit int) (int, Grid) {
	g = g.Clone()
	n := len(g)
	b := map[int]int{4: 2, 9: 3}[n]
	ok := func(r, c, v int) bool {
		for i := 0; i < n; i++ {
			if g[r][i] == v || g[i][c] == v || g[r/b*b+i/b][c/b*b+i%b] == v {
				return false
			}
		}
		return true
	}
	var first Grid
	var rec func(k int) int
	rec = func(k int) int {
		if k == n*n {
			if first == nil {
				first = g.Clone()
			}
			return 1
		}
		r, c := k/n, k%n
		if g[r][c] != 0 {
			return rec(k + 1)
		}
		count := 0
		for v := 1; v <= n && count < limit; v++ {
			if ok(r, c, v) {
				g[r][c] = v
				count += rec(k + 1)
				g[r][c] = 0
			}
		}
		return count
	}
	return rec(0), first
}

func TestSteps(t *testing.T) {
	envtest.Run(t, "testdata/steps.txt", func(initial []string) (envs.Env, error) {
		g, err := parseGrid(initial[0])
		if err != nil {
			return nil, err
		}
		_, sol := bruteForce(g, 1)
		if sol == nil {
			return nil, fmt.Errorf("script puzzle has no solution")
		}
		e := New(Config{Size: len(g), Clues: 0})
		e.Load(g, sol)
		return e, nil
	})
}

func TestPuzzlesHaveOneSolutionAndTheRightClues(t *testing.T) {
	if testing.Short() {
		t.Skip("a single-threaded sweep of 1,000 seeds, for the plain run; the race pass (-short) has nothing to find in it")
	}
	for _, tc := range []struct {
		variant string
		seeds   int
	}{{"4x4", 1000}, {"9x9", 1000}} {
		cfg, err := ParseVariant(tc.variant)
		if err != nil {
			t.Fatal(err)
		}
		for seed := int64(0); seed < int64(tc.seeds); seed++ {
			p, sol, err := Generate(cfg, seed)
			if err != nil {
				t.Fatal(err)
			}
			clues := 0
			for r := range p {
				for c := range p[r] {
					if p[r][c] != 0 {
						clues++
						if p[r][c] != sol[r][c] {
							t.Fatalf("%s seed %d: clue disagrees with the solution", tc.variant, seed)
						}
					}
				}
			}
			if clues != cfg.Clues {
				t.Fatalf("%s seed %d: %d clues, want %d", tc.variant, seed, clues, cfg.Clues)
			}
			n, found := bruteForce(p, 2)
			if n != 1 {
				t.Fatalf("%s seed %d: %d solutions, want exactly 1", tc.variant, seed, n)
			}
			if !found.Equal(sol) {
				t.Fatalf("%s seed %d: the unique solution is not the one returned", tc.variant, seed)
			}
		}
	}
}

func TestSameSeedSamePuzzle(t *testing.T) {
	distinct := map[string]bool{}
	for seed := int64(0); seed < 100; seed++ {
		a, _ := envtest.Play(New(Config{4, 10}), seed, []string{"1,1,1", "2,2,2"})
		b, _ := envtest.Play(New(Config{4, 10}), seed, []string{"1,1,1", "2,2,2"})
		if a != b {
			t.Fatalf("seed %d differs between runs", seed)
		}
		distinct[a] = true
	}
	if len(distinct) < 90 {
		t.Errorf("only %d distinct puzzles from 100 seeds", len(distinct))
	}
}

func TestParseVariant(t *testing.T) {
	for v, want := range map[string]Config{"4x4": {4, 10}, "9x9": {9, 30}, "9x9-25clues": {9, 25}} {
		if got, err := ParseVariant(v); err != nil || got != want {
			t.Errorf("ParseVariant(%q) = %v, %v", v, got, err)
		}
	}
	for _, v := range []string{"5x5", "4x4-2clues", "9x9-81clues", ""} {
		if _, err := ParseVariant(v); err == nil {
			t.Errorf("ParseVariant(%q) accepted", v)
		}
	}
}

func FuzzParseMove(f *testing.F) {
	for _, s := range []string{"1,2,3", "(1, 2, 3)", "1,2", "a,b,c", "", "999999999999,1,1", "1,,2,3", " 4,4,4 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mv, ok := ParseMove(s)
		if ok && (mv.Row < 0 || mv.Col < 0 || mv.Value < 0) {
			t.Fatalf("%q parsed to negative %+v", s, mv)
		}
		e := New(Config{4, 10})
		if err := e.Reset(5); err != nil {
			t.Fatal(err)
		}
		before := e.Render(envs.Raw)
		st, err := e.Step(s)
		if err != nil {
			t.Fatal(err)
		}
		if !ok && st.Valid {
			t.Fatalf("unparseable %q was valid", s)
		}
		if !st.Valid && e.Render(envs.Raw) != before {
			t.Fatalf("invalid %q changed the board", s)
		}
	})
}
