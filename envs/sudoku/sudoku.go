// Package sudoku is the paper's Sudoku: 4×4 with 10 clues and a unique solution by default (9×9 as
// a variant), actions "r,c,v" (1-indexed), and a reward of 1 only for a complete, correct board.
package sudoku

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"

	"github.com/spa-rl/spa/envs"
)

// MaxActions is the episode budget (docs/method.md).
const MaxActions = 50

// Config sizes a puzzle.
type Config struct {
	// Size is the side (4 or 9); boxes are √Size × √Size.
	Size  int
	Clues int
}

func init() {
	envs.Register(envs.Info{
		Name:        "sudoku",
		Description: "fill the grid so rows, columns and boxes hold each digit once; unique solutions",
		Variants: []envs.Variant{
			{Name: "4x4", Description: "4×4 with 10 clues (the paper's setting)"},
			{Name: "9x9", Description: "9×9 with 30 clues"},
		},
	}, func(variant string) (envs.Env, error) {
		cfg, err := ParseVariant(variant)
		if err != nil {
			return nil, err
		}
		return New(cfg), nil
	})
}

// ParseVariant reads "4x4", "9x9", or with an explicit clue count, "9x9-25clues".
func ParseVariant(v string) (Config, error) {
	m := regexp.MustCompile(`^(4x4|9x9)(?:-(\d+)clues?)?$`).FindStringSubmatch(strings.ToLower(v))
	if m == nil {
		return Config{}, fmt.Errorf("want 4x4 or 9x9, optionally with -Nclues")
	}
	cfg := Config{Size: 4, Clues: 10}
	if m[1] == "9x9" {
		cfg = Config{Size: 9, Clues: 30}
	}
	if m[2] != "" {
		cfg.Clues, _ = strconv.Atoi(m[2])
	}
	min := map[int]int{4: 4, 9: 22}[cfg.Size]
	if cfg.Clues < min || cfg.Clues >= cfg.Size*cfg.Size {
		return Config{}, fmt.Errorf("a %dx%d puzzle needs %d to %d clues here", cfg.Size, cfg.Size, min, cfg.Size*cfg.Size-1)
	}
	return cfg, nil
}

// Env is one Sudoku game.
type Env struct {
	cfg      Config
	puzzle   Grid
	board    Grid
	solution Grid
	ep       envs.Episode
}

// New makes an environment; call Reset before playing.
func New(cfg Config) *Env { return &Env{cfg: cfg} }

// Spec implements envs.Env.
func (e *Env) Spec() envs.Spec {
	n := e.cfg.Size
	return envs.Spec{
		Name:        "sudoku",
		Variant:     fmt.Sprintf("%dx%d", n, n),
		Description: "fill the grid with unique digits per row, column and box",
		Instructions: fmt.Sprintf("You are solving a %dx%d Sudoku. Fill every empty cell with a digit from 1 to %d so that "+
			"each row, each column and each %dx%d box contains every digit exactly once. "+
			"Write a move as r,c,v: row r, column c (both from 1), value v. Moves into given cells, "+
			"out of range, or that repeat a digit in a row, column or box are invalid.", n, n, n, boxSide(n), boxSide(n)),
		WorldModelInstructions: "In <observation>, describe the board and its empty cells. " +
			"In <prediction>, describe the board after your moves.",
		Legend:       ". Empty cell | digits are filled cells; rows are separated by |",
		Actions:      []string{"r,c,v"},
		ActionFormat: fmt.Sprintf("r,c,v with r, c and v from 1 to %d", n),
		MaxActions:   MaxActions,
		RenderModes:  []envs.RenderMode{envs.Raw, envs.Coords},
	}
}

// Reset implements envs.Env.
func (e *Env) Reset(seed int64) error {
	p, sol, err := Generate(e.cfg, seed)
	if err != nil {
		return err
	}
	e.Load(p, sol)
	return nil
}

// Load starts an episode on a given puzzle and its solution.
func (e *Env) Load(puzzle, solution Grid) {
	e.puzzle, e.solution, e.board = puzzle.Clone(), solution.Clone(), puzzle.Clone()
	e.ep.Start(MaxActions)
}

// Move is a parsed action.
type Move struct{ Row, Col, Value int }

var moveRE = regexp.MustCompile(`^\(?\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)?$`)

// ParseMove reads "r,c,v", allowing spaces and surrounding parentheses. It checks only the form;
// Step checks the range and the rules.
func ParseMove(s string) (Move, bool) {
	m := moveRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil || len(m[1]) > 3 || len(m[2]) > 3 || len(m[3]) > 3 {
		return Move{}, false
	}
	r, _ := strconv.Atoi(m[1])
	c, _ := strconv.Atoi(m[2])
	v, _ := strconv.Atoi(m[3])
	return Move{r, c, v}, true
}

// Step implements envs.Env.
func (e *Env) Step(action string) (envs.Step, error) {
	if err := e.ep.Check(); err != nil {
		return envs.Step{}, err
	}
	mv, ok := ParseMove(action)
	n := e.cfg.Size
	if !ok || mv.Row < 1 || mv.Col < 1 || mv.Value < 1 || mv.Row > n || mv.Col > n || mv.Value > n {
		return envs.Step{}, nil
	}
	r, c := mv.Row-1, mv.Col-1
	if e.puzzle[r][c] != 0 || conflicts(e.board, r, c, mv.Value) {
		return envs.Step{}, nil
	}
	e.board[r][c] = mv.Value
	success := e.board.Equal(e.solution)
	done := e.ep.Use(success)
	reward := 0.0
	if success {
		reward = 1
	}
	return envs.Step{Reward: reward, Done: done, Success: success, Valid: true}, nil
}

// conflicts reports whether v at (r,c) repeats a digit of its row, column or box, ignoring the
// cell itself (so a filled cell can be changed).
func conflicts(g Grid, r, c, v int) bool {
	n, b := len(g), boxSide(len(g))
	for i := 0; i < n; i++ {
		if (i != c && g[r][i] == v) || (i != r && g[i][c] == v) {
			return true
		}
	}
	for i := r / b * b; i < r/b*b+b; i++ {
		for j := c / b * b; j < c/b*b+b; j++ {
			if (i != r || j != c) && g[i][j] == v {
				return true
			}
		}
	}
	return false
}

// Render implements envs.Env: "| . . 1 4 | 1 4 . 3 | 4 2 . . | . 1 4 2", and with coordinates
// the empty cells, 1-indexed.
func (e *Env) Render(mode envs.RenderMode) string {
	var sb strings.Builder
	var empty []string
	for r, row := range e.board {
		sb.WriteString("|")
		for c, v := range row {
			if v == 0 {
				sb.WriteString(" .")
				empty = append(empty, fmt.Sprintf("(%d,%d)", r+1, c+1))
			} else {
				fmt.Fprintf(&sb, " %d", v)
			}
		}
		if r < len(e.board)-1 {
			sb.WriteString(" ")
		}
	}
	if mode == envs.Coords {
		if len(empty) == 0 {
			sb.WriteString("\nThere are no empty positions.")
		} else {
			sb.WriteString("\nEmpty positions to be filled are at " + strings.Join(empty, ", ") + ".")
		}
	}
	return sb.String()
}

// RandomAction implements envs.Explorer: a value that breaks no rule in a random empty cell; when
// earlier fills have blocked every empty cell, a new value for one of those fills; only when
// nothing legal exists, any in-range move.
func (e *Env) RandomAction(rng *rand.Rand) string {
	n := e.cfg.Size
	if e.board != nil {
		for _, emptyOnly := range []bool{true, false} {
			for _, k := range rng.Perm(n * n) {
				r, c := k/n, k%n
				if e.puzzle[r][c] != 0 || (emptyOnly && e.board[r][c] != 0) {
					continue
				}
				for _, v := range rng.Perm(n) {
					if v+1 != e.board[r][c] && !conflicts(e.board, r, c, v+1) {
						return fmt.Sprintf("%d,%d,%d", r+1, c+1, v+1)
					}
				}
			}
		}
	}
	return fmt.Sprintf("%d,%d,%d", 1+rng.IntN(n), 1+rng.IntN(n), 1+rng.IntN(n))
}
