// Package envs defines the environments spa's agents play: a small Env interface, a registry of
// named environments and their variants, and the shared pieces of grid rendering. The environments
// live in subpackages (sokoban, frozenlake, sudoku) that register themselves; import
// envs/builtin to get all of them. Nothing here needs libtorch.
package envs

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// RenderMode selects how a state is shown to the policy.
type RenderMode string

const (
	// Raw is the text grid alone.
	Raw RenderMode = "raw"
	// Coords is the grid plus a natural-language line of coordinates (the paper's "state
	// estimation" rendering, which SPA uses throughout).
	Coords RenderMode = "coords"
)

// ParseRenderMode accepts "raw" or "coords".
func ParseRenderMode(s string) (RenderMode, error) {
	switch RenderMode(strings.ToLower(strings.TrimSpace(s))) {
	case Raw:
		return Raw, nil
	case Coords:
		return Coords, nil
	}
	return "", fmt.Errorf("unknown render mode %q (want raw or coords)", s)
}

// Spec describes an environment to the agent and to tools.
type Spec struct {
	Name        string `json:"name"`
	Variant     string `json:"variant"`
	Description string `json:"description"`
	// Instructions is the task as the base prompt states it.
	Instructions string `json:"instructions"`
	// WorldModelInstructions adds what the world-model prompt asks the policy to describe in
	// <observation> and predict in <prediction>.
	WorldModelInstructions string `json:"world_model_instructions"`
	// Legend explains the symbols of the rendered grid.
	Legend string `json:"legend"`
	// Actions lists the action names; ActionFormat says how to write one (for Sudoku, "r,c,v").
	Actions      []string `json:"actions"`
	ActionFormat string   `json:"action_format"`
	// MaxActions is the episode's action budget: after that many valid actions the episode ends.
	MaxActions  int          `json:"max_actions"`
	RenderModes []RenderMode `json:"render_modes"`
}

// Step is the outcome of one action.
type Step struct {
	Reward float64 `json:"reward"`
	// Done is true once the episode is over: solved, lost, or out of actions.
	Done bool `json:"done"`
	// Success is the environment's own success flag.
	Success bool `json:"success"`
	// Valid is false when the action did not parse or broke the rules; such an action changes
	// nothing, earns nothing and does not use the budget (the rollout adds the format penalty).
	Valid bool `json:"valid"`
}

// Env is one playable environment instance. It is not safe for concurrent use; make one per
// episode (they are cheap).
type Env interface {
	Spec() Spec
	// Reset starts a new episode; the same seed always gives the same puzzle and, where the
	// environment is stochastic, the same dynamics.
	Reset(seed int64) error
	// Step applies one action written as the agent writes it ("Up", "2,3,4").
	Step(action string) (Step, error)
	// Render shows the current state.
	Render(mode RenderMode) string
}

// Closer is an Env that holds resources beyond its episode: a session on a remote host
// (busenv.Remote), a process, a connection. Whoever makes an Env calls Close when done with it.
type Closer interface {
	Close() error
}

// Close closes e if it is a Closer, and does nothing otherwise.
func Close(e Env) error {
	if c, ok := e.(Closer); ok {
		return c.Close()
	}
	return nil
}

// Errors returned by Step.
var (
	ErrNotReset    = errors.New("envs: step before reset")
	ErrEpisodeDone = errors.New("envs: step after the episode ended")
)

// Variant is one named configuration of an environment.
type Variant struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// Info describes a registered environment.
type Info struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Variants    []Variant `json:"variants"` // the first is the default
}

// Factory makes an environment of the given variant; variant "" is never passed.
type Factory func(variant string) (Env, error)

type entry struct {
	info    Info
	factory Factory
}

var (
	mu       sync.RWMutex
	registry = map[string]entry{}
)

// Register adds an environment; environment packages call it from init. It panics on a
// duplicate name, a programming error caught at start-up.
func Register(info Info, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[info.Name]; dup {
		panic("envs: duplicate registration of " + info.Name)
	}
	if len(info.Variants) == 0 {
		panic("envs: " + info.Name + " registered without variants")
	}
	registry[info.Name] = entry{info, f}
}

// New makes an environment by name; an empty variant picks the default.
func New(name, variant string) (Env, error) {
	mu.RLock()
	e, ok := registry[strings.ToLower(name)]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown environment %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	if variant == "" {
		variant = e.info.Variants[0].Name
	}
	env, err := e.factory(variant)
	if err != nil {
		return nil, fmt.Errorf("%s variant %q: %w", e.info.Name, variant, err)
	}
	return env, nil
}

// List describes every registered environment, sorted by name.
func List() []Info {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]Info, 0, len(registry))
	for _, e := range registry {
		out = append(out, e.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names lists the registered environment names, sorted.
func Names() []string {
	var names []string
	for _, i := range List() {
		names = append(names, i.Name)
	}
	return names
}
