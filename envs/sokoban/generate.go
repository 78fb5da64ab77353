package sokoban

import (
	"fmt"
	"math/rand/v2"

	"github.com/spa-rl/spa/envs"
)

// Level is a Sokoban puzzle.
type Level struct {
	Walls   [][]bool
	Targets []envs.Pos
	Boxes   []envs.Pos
	Player  envs.Pos
}

// Generation parameters (docs/method.md, after RAGEN's gym-sokoban).
const (
	carveSteps     = 20 // for 6×6; larger rooms scale it by area so they are not mostly wall
	changeDirProb  = 0.35
	searchDepth    = 300
	maxGenAttempts = 1000
)

// Generate makes the level for seed by reverse play: carve a room by a random walk, put the boxes
// on their targets and the player somewhere free, then pull boxes backwards by depth-first search
// and keep the reachable state that moves the boxes farthest. Every pull is the reverse of a push,
// so every level is solvable.
func Generate(cfg Config, seed int64) (Level, error) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5350415f534f4b4f)) // "SPA_SOKO"
	for attempt := 0; attempt < maxGenAttempts; attempt++ {
		walls := carveRoom(cfg, rng)
		free := freeCells(walls)
		if len(free) < cfg.Boxes+1+cfg.Boxes {
			continue
		}
		rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
		targets := append([]envs.Pos(nil), free[:cfg.Boxes]...)
		start := state{player: free[cfg.Boxes], boxes: append([]envs.Pos(nil), targets...)}
		best, score := reversePlay(walls, targets, start, rng)
		if score == 0 {
			continue
		}
		return Level{Walls: walls, Targets: targets, Boxes: best.boxes, Player: best.player}, nil
	}
	return Level{}, fmt.Errorf("sokoban: no level with moved boxes after %d attempts (seed %d)", maxGenAttempts, seed)
}

// carveRoom walks a random path through a room of walls, opening a plus-shaped patch at each step.
func carveRoom(cfg Config, rng *rand.Rand) [][]bool {
	walls := make([][]bool, cfg.Rows)
	for r := range walls {
		walls[r] = make([]bool, cfg.Cols)
		for c := range walls[r] {
			walls[r][c] = true
		}
	}
	dirs := envs.Directions()
	patch := [5]envs.Pos{{}, envs.Up, envs.Down, envs.Left, envs.Right}
	pos := envs.Pos{R: 1 + rng.IntN(cfg.Rows-2), C: 1 + rng.IntN(cfg.Cols-2)}
	dir := dirs[rng.IntN(4)]
	steps := carveSteps * cfg.Rows * cfg.Cols / 36
	for step := 0; step < steps; step++ {
		if rng.Float64() < changeDirProb {
			dir = dirs[rng.IntN(4)]
		}
		for _, d := range patch {
			p := pos.Add(d)
			if p.R >= 1 && p.C >= 1 && p.R <= cfg.Rows-2 && p.C <= cfg.Cols-2 {
				walls[p.R][p.C] = false
			}
		}
		next := pos.Add(dir)
		if next.R >= 1 && next.C >= 1 && next.R <= cfg.Rows-2 && next.C <= cfg.Cols-2 {
			pos = next
		}
	}
	return walls
}

func freeCells(walls [][]bool) []envs.Pos {
	var out []envs.Pos
	for r, row := range walls {
		for c, w := range row {
			if !w {
				out = append(out, envs.Pos{R: r, C: c})
			}
		}
	}
	return out
}

type state struct {
	player envs.Pos
	boxes  []envs.Pos
}

// appendKey appends the state's identity (player, then each box in order) to b.
func (s state) appendKey(b []byte) []byte {
	b = append(b, byte(s.player.R), byte(s.player.C))
	for _, p := range s.boxes {
		b = append(b, byte(p.R), byte(p.C))
	}
	return b
}

// reversePlay explores pulls depth-first from start and returns the state with the highest score:
// (number of times a different box was pulled) × (total Manhattan distance of boxes from their
// targets), among states where some box is off the targets.
func reversePlay(walls [][]bool, targets []envs.Pos, start state, rng *rand.Rand) (state, int) {
	seen := map[string]bool{}
	// The key is built in one buffer: most visits reach a state already seen, and a lookup by
	// string(key) allocates nothing, so only a new state's key is copied (into the map).
	var key []byte
	best, bestScore := start, 0
	dirs := envs.Directions()
	var visit func(s state, depth, swaps, lastPulled int)
	visit = func(s state, depth, swaps, lastPulled int) {
		if depth >= searchDepth {
			return
		}
		key = s.appendKey(key[:0])
		if seen[string(key)] {
			return
		}
		seen[string(key)] = true
		dist, placed := 0, 0
		for i, b := range s.boxes {
			dist += abs(b.R-targets[i].R) + abs(b.C-targets[i].C)
			if indexOf(targets, b) >= 0 {
				placed++
			}
		}
		// Boxes that swapped targets are displaced yet already solved; such a state is no puzzle.
		if score := swaps * dist; score > bestScore && placed < len(s.boxes) {
			best, bestScore = state{s.player, append([]envs.Pos(nil), s.boxes...)}, score
		}
		// Eight reverse moves: each direction with and without pulling the box behind the player.
		// rng.Perm(8)'s draws, without its allocation on every visit.
		order := [8]int{0, 1, 2, 3, 4, 5, 6, 7}
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			d, pull := dirs[k%4], k >= 4
			next := s.player.Add(d)
			if walls[next.R][next.C] || indexOf(s.boxes, next) >= 0 {
				continue
			}
			b := indexOf(s.boxes, s.player.Add(envs.Pos{R: -d.R, C: -d.C}))
			if pull && b < 0 {
				continue
			}
			ns := state{player: next, boxes: append([]envs.Pos(nil), s.boxes...)}
			nswaps, nlast := swaps, lastPulled
			if pull {
				ns.boxes[b] = s.player
				if b != lastPulled {
					nswaps++
					nlast = b
				}
			}
			visit(ns, depth+1, nswaps, nlast)
		}
	}
	visit(start, 0, 0, -1)
	return best, bestScore
}

func indexOf(ps []envs.Pos, p envs.Pos) int {
	for i, q := range ps {
		if q == p {
			return i
		}
	}
	return -1
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
