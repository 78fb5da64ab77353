// Package frozenlake is the paper's FrozenLake: a slippery grid of ice and holes where the intended
// move and each perpendicular move happen with probability 1/3. Maps are 4×4 by default (6×6 is
// the out-of-distribution test), tiles frozen with probability 0.8, with start and goal distinct
// and joined by a hole-free path. The slips are drawn from the reset seed, so an episode is
// reproducible action for action.
package frozenlake

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/spa-rl/spa/envs"
)

// FrozenProb is the chance that a tile is ice rather than a hole.
const FrozenProb = 0.8

const maxMapAttempts = 10000

// MaxActions is the episode budget (docs/method.md).
const MaxActions = 10

func init() {
	envs.Register(envs.Info{
		Name:        "frozenlake",
		Description: "walk a slippery frozen lake to the goal without falling into a hole",
		Variants: []envs.Variant{
			{Name: "4x4", Description: "4×4 lake (the paper's training setting)"},
			{Name: "6x6", Description: "6×6 lake (the paper's out-of-distribution test)"},
		},
	}, func(variant string) (envs.Env, error) {
		n, err := ParseVariant(variant)
		if err != nil {
			return nil, err
		}
		return New(n), nil
	})
}

// ParseVariant reads "4x4" (square lakes, 2 to 12 wide).
func ParseVariant(v string) (int, error) {
	a, b, ok := strings.Cut(strings.ToLower(v), "x")
	n, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n != m || n < 2 || n > 12 {
		return 0, fmt.Errorf("want NxN with N in 2-12, e.g. 4x4")
	}
	return n, nil
}

// Map is one lake.
type Map struct {
	Size        int
	Holes       [][]bool
	Start, Goal envs.Pos
}

// Env is one FrozenLake game.
type Env struct {
	size   int
	m      Map
	player envs.Pos
	// slip draws 0 (the intended move), 1 or 2 (a perpendicular one); tests script it.
	slip func() int
	ep   envs.Episode
}

// New makes a size×size environment; call Reset before playing.
func New(size int) *Env { return &Env{size: size} }

// Spec implements envs.Env.
func (e *Env) Spec() envs.Spec {
	return envs.Spec{
		Name:        "frozenlake",
		Variant:     fmt.Sprintf("%dx%d", e.size, e.size),
		Description: "reach the goal without falling into a hole",
		Instructions: "You are walking on a frozen lake. Reach the goal without falling into a hole. " +
			"The ice is slippery: you move in the direction you choose only some of the time, " +
			"and otherwise slide to one side of it.",
		WorldModelInstructions: "In <observation>, describe where you, the holes and the goal are. " +
			"In <prediction>, describe where you expect to be after your actions.",
		Legend:       "P You | _ Frozen | O Hole | G Goal | X You in Hole | √ You on Goal",
		Actions:      []string{"Left", "Down", "Right", "Up"},
		ActionFormat: "one of the action names",
		MaxActions:   MaxActions,
		RenderModes:  []envs.RenderMode{envs.Raw, envs.Coords},
	}
}

// Generate makes the map for seed: tiles are frozen with FrozenProb, start and goal are two
// distinct frozen tiles, and maps without a hole-free path between them are drawn again.
func Generate(size int, seed int64) (Map, error) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5350415f4c414b45)) // "SPA_LAKE"
	for attempt := 0; attempt < maxMapAttempts; attempt++ {
		m := Map{Size: size, Holes: make([][]bool, size)}
		var frozen []envs.Pos
		for r := range m.Holes {
			m.Holes[r] = make([]bool, size)
			for c := range m.Holes[r] {
				m.Holes[r][c] = rng.Float64() >= FrozenProb
				if !m.Holes[r][c] {
					frozen = append(frozen, envs.Pos{R: r, C: c})
				}
			}
		}
		if len(frozen) < 2 {
			continue
		}
		i := rng.IntN(len(frozen))
		j := rng.IntN(len(frozen) - 1)
		if j >= i {
			j++
		}
		m.Start, m.Goal = frozen[i], frozen[j]
		if HasPath(m) {
			return m, nil
		}
	}
	return Map{}, fmt.Errorf("frozenlake: no connected %dx%d map after %d attempts (seed %d)", size, size, maxMapAttempts, seed)
}

// HasPath reports whether the goal can be reached from the start over frozen tiles.
func HasPath(m Map) bool {
	seen := map[envs.Pos]bool{m.Start: true}
	queue := []envs.Pos{m.Start}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == m.Goal {
			return true
		}
		for _, d := range envs.Directions() {
			q := p.Add(d)
			if q.R >= 0 && q.C >= 0 && q.R < m.Size && q.C < m.Size && !m.Holes[q.R][q.C] && !seen[q] {
				seen[q] = true
				queue = append(queue, q)
			}
		}
	}
	return false
}

// Reset implements envs.Env.
func (e *Env) Reset(seed int64) error {
	m, err := Generate(e.size, seed)
	if err != nil {
		return err
	}
	e.Load(m, seed)
	return nil
}

// Load starts an episode on a given map; slips are drawn from slipSeed.
func (e *Env) Load(m Map, slipSeed int64) {
	e.m, e.player = m, m.Start
	rng := rand.New(rand.NewPCG(uint64(slipSeed), 0x5350415f534c4950)) // "SPA_SLIP"
	e.slip = func() int { return rng.IntN(3) }
	e.ep.Start(MaxActions)
}

// Step implements envs.Env. The move that happens is the intended one or one of its two
// perpendiculars, each with probability 1/3; walking off the map leaves the player in place.
func (e *Env) Step(action string) (envs.Step, error) {
	if err := e.ep.Check(); err != nil {
		return envs.Step{}, err
	}
	dir, ok := envs.ParseDirection(action)
	if !ok {
		return envs.Step{}, nil
	}
	switch e.slip() {
	case 1:
		dir = envs.Pos{R: dir.C, C: dir.R} // one perpendicular
	case 2:
		dir = envs.Pos{R: -dir.C, C: -dir.R} // the other
	}
	if next := e.player.Add(dir); next.R >= 0 && next.C >= 0 && next.R < e.size && next.C < e.size {
		e.player = next
	}
	success := e.player == e.m.Goal
	done := e.ep.Use(success || e.m.Holes[e.player.R][e.player.C])
	reward := 0.0
	if success {
		reward = 1
	}
	return envs.Step{Reward: reward, Done: done, Success: success, Valid: true}, nil
}

// Render implements envs.Env.
func (e *Env) Render(mode envs.RenderMode) string {
	var sb strings.Builder
	var holes []envs.Pos
	for r := 0; r < e.size; r++ {
		for c := 0; c < e.size; c++ {
			p := envs.Pos{R: r, C: c}
			hole := e.m.Holes[r][c]
			if hole {
				holes = append(holes, p)
			}
			switch {
			case p == e.player && hole:
				sb.WriteString("X")
			case p == e.player && p == e.m.Goal:
				sb.WriteString("√")
			case p == e.player:
				sb.WriteString("P")
			case hole:
				sb.WriteString("O")
			case p == e.m.Goal:
				sb.WriteString("G")
			default:
				sb.WriteString("_")
			}
		}
		if r < e.size-1 {
			sb.WriteString("\n")
		}
	}
	if mode == envs.Coords {
		fmt.Fprintf(&sb, "\nPlayer (P) is at %s; ", e.player)
		if len(holes) > 0 {
			sb.WriteString(envs.Phrase("hole", "holes", "O", holes) + "; ")
		} else {
			sb.WriteString("there are no holes; ")
		}
		fmt.Fprintf(&sb, "goal (G) is at %s.", e.m.Goal)
	}
	return sb.String()
}
