package envs

import "math/rand/v2"

// Explorer is implemented by environments that can propose a random well-formed action for the
// current state, better than picking an action name at random (Sudoku proposes a move into an
// empty cell). The self-play explorer and benchmarks use it.
type Explorer interface {
	RandomAction(rng *rand.Rand) string
}

// RandomAction proposes an action for env's current state: the environment's own proposal when it
// is an Explorer, else one of its action names.
func RandomAction(env Env, rng *rand.Rand) string {
	if x, ok := env.(Explorer); ok {
		return x.RandomAction(rng)
	}
	actions := env.Spec().Actions
	if len(actions) == 0 {
		return ""
	}
	return actions[rng.IntN(len(actions))]
}

// Planner is implemented by environments that can find a shortest solution from a rendered state
// (Sokoban). The warm-up's guided player (run.warmup_skill) follows it, as a stand-in for the
// partial reading of the board that an instruct model brings.
type Planner interface {
	// Plan reads state alone, never the episode in progress, so one value serves concurrent
	// callers.
	Plan(state string) ([]string, error)
}
