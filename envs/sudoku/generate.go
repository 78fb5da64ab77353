package sudoku

import (
	"fmt"
	"math/rand/v2"
)

// Grid is a Sudoku board; 0 is an empty cell.
type Grid [][]int

// Clone copies g.
func (g Grid) Clone() Grid {
	out := make(Grid, len(g))
	for i := range g {
		out[i] = append([]int(nil), g[i]...)
	}
	return out
}

// Equal reports whether g and h hold the same digits.
func (g Grid) Equal(h Grid) bool {
	if len(g) != len(h) {
		return false
	}
	for i := range g {
		for j := range g[i] {
			if g[i][j] != h[i][j] {
				return false
			}
		}
	}
	return true
}

func boxSide(n int) int {
	if n == 9 {
		return 3
	}
	return 2
}

const maxPuzzleAttempts = 100

// Generate makes the puzzle for seed and its solution: a shuffled valid grid, from which cells are
// removed in random order as long as the solution stays unique, until cfg.Clues remain.
func Generate(cfg Config, seed int64) (puzzle, solution Grid, err error) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5350415f5355444f)) // "SPA_SUDO"
	n := cfg.Size
	for attempt := 0; attempt < maxPuzzleAttempts; attempt++ {
		solution = shuffledGrid(n, rng)
		puzzle = solution.Clone()
		filled := n * n
		for _, k := range rng.Perm(n * n) {
			if filled == cfg.Clues {
				break
			}
			r, c := k/n, k%n
			v := puzzle[r][c]
			puzzle[r][c] = 0
			if CountSolutions(puzzle, 2) != 1 {
				puzzle[r][c] = v
				continue
			}
			filled--
		}
		if filled == cfg.Clues {
			return puzzle, solution, nil
		}
	}
	return nil, nil, fmt.Errorf("sudoku: no %dx%d puzzle with %d clues and a unique solution after %d attempts (seed %d)",
		n, n, cfg.Clues, maxPuzzleAttempts, seed)
}

// shuffledGrid permutes a canonical solved grid by digits, rows within bands, columns within
// stacks, bands and stacks: every result is a valid solution.
func shuffledGrid(n int, rng *rand.Rand) Grid {
	b := boxSide(n)
	digits := rng.Perm(n)
	order := func() []int {
		var out []int
		for _, band := range rng.Perm(b) {
			for _, i := range rng.Perm(b) {
				out = append(out, band*b+i)
			}
		}
		return out
	}
	rows, cols := order(), order()
	g := make(Grid, n)
	for r := range g {
		g[r] = make([]int, n)
		for c := range g[r] {
			rr, cc := rows[r], cols[c]
			g[r][c] = digits[(b*(rr%b)+rr/b+cc)%n] + 1
		}
	}
	return g
}

// CountSolutions counts the solutions of g, stopping at limit. g is left unchanged.
func CountSolutions(g Grid, limit int) int {
	g = g.Clone()
	n := len(g)
	var solve func() int
	solve = func() int {
		// Fill the empty cell with the fewest candidates first.
		br, bc, best := -1, -1, n+1
		for r := 0; r < n; r++ {
			for c := 0; c < n; c++ {
				if g[r][c] != 0 {
					continue
				}
				k := 0
				for v := 1; v <= n; v++ {
					if !conflicts(g, r, c, v) {
						k++
					}
				}
				if k < best {
					br, bc, best = r, c, k
				}
			}
		}
		if br < 0 {
			return 1
		}
		count := 0
		for v := 1; v <= n && count < limit; v++ {
			if conflicts(g, br, bc, v) {
				continue
			}
			g[br][bc] = v
			count += solve()
			g[br][bc] = 0
		}
		return count
	}
	return solve()
}
