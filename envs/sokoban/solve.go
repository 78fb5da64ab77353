package sokoban

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spa-rl/spa/envs"
)

// maxPlanBoxes bounds the boxes Solve handles: it packs a state, 9 bits a cell, into 64 bits.
const maxPlanBoxes = 6

// ErrNoPlan is returned by Solve when no solution exists within its move limit.
var ErrNoPlan = errors.New("sokoban: no solution within the move limit")

// Solve finds a shortest solution of l (the fewest moves that place every box) by breadth-first
// search over (player, boxes), written apart from Step so that tests can check one against the
// other. A state is the player's cell and the boxes' cells (row*cols+col), sorted since boxes are
// interchangeable, packed into one uint64: a sweep of 1,000 two-box levels spent half its time
// hashing and allocating string keys. A level that starts solved has the empty plan.
func Solve(l Level, limit int) ([]string, error) {
	if len(l.Walls) == 0 || len(l.Walls[0]) == 0 {
		return nil, fmt.Errorf("sokoban: empty level")
	}
	rows, cols, n := len(l.Walls), len(l.Walls[0]), len(l.Boxes)
	if rows*cols > 1<<9 || n > maxPlanBoxes {
		return nil, fmt.Errorf("sokoban: a %dx%d room with %d boxes is too large to plan (at most 512 cells and %d boxes)", rows, cols, n, maxPlanBoxes)
	}
	wall, target := make([]bool, rows*cols), make([]bool, rows*cols)
	for r, row := range l.Walls {
		if len(row) != cols {
			return nil, fmt.Errorf("sokoban: row %d has %d cells, want %d", r, len(row), cols)
		}
		for c, w := range row {
			// The border is wall whatever the level says, so a step never leaves the room.
			wall[r*cols+c] = w || r == 0 || c == 0 || r == rows-1 || c == cols-1
		}
	}
	for _, p := range l.Targets {
		target[p.R*cols+p.C] = true
	}
	type node struct {
		player int16
		boxes  [maxPlanBoxes]int16
		// parent indexes the node this one was reached from; move is the action that did it.
		parent int32
		move   int8
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
	start := node{player: int16(l.Player.R*cols + l.Player.C), parent: -1}
	for i, b := range l.Boxes {
		start.boxes[i] = int16(b.R*cols + b.C)
	}
	if done(start) {
		return []string{}, nil
	}
	actions := [4]string{"Up", "Down", "Left", "Right"}
	moves := [4]int16{int16(-cols), int16(cols), -1, 1}
	nodes := []node{start}
	seen := map[uint64]struct{}{pack(start): {}}
	for from, depth := 0, 1; depth <= limit && from < len(nodes); depth++ {
		to := len(nodes)
		for i := from; i < to; i++ {
			s := nodes[i]
			for a, d := range moves {
				m := node{player: s.player + d, boxes: s.boxes, parent: int32(i), move: int8(a)}
				if wall[m.player] {
					continue
				}
				if b := slices.Index(m.boxes[:n], m.player); b >= 0 {
					q := m.player + d
					if wall[q] || slices.Contains(m.boxes[:n], q) {
						continue
					}
					m.boxes[b] = q
				}
				k := pack(m)
				if _, ok := seen[k]; ok {
					continue
				}
				seen[k] = struct{}{}
				nodes = append(nodes, m)
				if done(m) {
					plan := make([]string, 0, depth)
					for j := int32(len(nodes) - 1); nodes[j].parent >= 0; j = nodes[j].parent {
						plan = append(plan, actions[nodes[j].move])
					}
					slices.Reverse(plan)
					return plan, nil
				}
			}
		}
		from = to
	}
	return nil, ErrNoPlan
}

// ParseLevel reads a level from its rendering (either mode): the grid rows in the legend's
// symbols, up to the first line that is not one (the coordinates sentence).
func ParseLevel(text string) (Level, error) {
	var l Level
	players := 0
	for r, line := range strings.Split(strings.TrimSpace(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.IndexFunc(line, func(ch rune) bool { return !strings.ContainsRune("#_OX√PS", ch) }) >= 0 {
			break
		}
		row := make([]bool, 0, len(line))
		for c, ch := range []rune(line) {
			p := envs.Pos{R: r, C: c}
			row = append(row, ch == '#')
			switch ch {
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
			}
		}
		if len(l.Walls) > 0 && len(row) != len(l.Walls[0]) {
			return Level{}, fmt.Errorf("sokoban: grid row %d has %d cells, row 0 has %d", r, len(row), len(l.Walls[0]))
		}
		l.Walls = append(l.Walls, row)
	}
	switch {
	case len(l.Walls) == 0:
		return Level{}, fmt.Errorf("sokoban: no grid in %q", firstLine(text))
	case players != 1:
		return Level{}, fmt.Errorf("sokoban: the grid has %d players, want 1", players)
	}
	return l, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// Plan implements envs.Planner: a shortest solution from a rendered state, within four times the
// action budget.
func (e *Env) Plan(state string) ([]string, error) {
	l, err := ParseLevel(state)
	if err != nil {
		return nil, err
	}
	return Solve(l, 4*max(1, e.cfg.MaxActions))
}
