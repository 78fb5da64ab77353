// Package harness is the SPA pipeline end to end: self-play collection, ground-truth replacement,
// filtering, world-model SFT, PPO and evaluation, for the methods the paper compares, with the run
// directory, resume and the report.
package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/internal/choice"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/worldmodel"
)

// Exploration is who plays self-play (run.explore).
type Exploration string

const (
	// ExploreAuto is the paper's choice for what the run starts from: the policy for a
	// pretrained run.model, the random explorer for a model trained from scratch.
	ExploreAuto Exploration = "auto"
	// ExploreRandom is the random-action Explorer (the only sensible choice from scratch).
	ExploreRandom Exploration = "random"
	// ExplorePolicy is the policy itself, in the world-model format (the paper's).
	ExplorePolicy Exploration = "policy"
	// ExploreMix is both, alternating.
	ExploreMix Exploration = "mix"
)

// ParseExploration accepts the Exploration names; empty means ExploreAuto.
func ParseExploration(s string) (Exploration, error) {
	return choice.Parse("exploration (run.explore)", s, ExploreAuto, ExploreAuto, ExploreRandom, ExplorePolicy, ExploreMix)
}

// For resolves ExploreAuto for a run that starts from a pretrained checkpoint or from scratch;
// the other choices stand.
func (e Exploration) For(pretrained bool) Exploration {
	switch {
	case e != ExploreAuto:
		return e
	case pretrained:
		return ExplorePolicy
	}
	return ExploreRandom
}

// Explorer is the random-action explorer of self-play (the paper's ablation, and the only
// sensible explorer for a model trained from scratch): an rollout.LLM that answers every turn
// with well-formed text and 1–3 random actions. In the world-model format it writes the state it
// was shown as its observation and, as a naive belief, the same state as its prediction; the
// ground-truth replacement stage then puts the true next state there.
type Explorer struct {
	Spec envs.Spec
	Mode rollout.Mode
	// MaxActions bounds the actions per answer.
	MaxActions int
	// Guide, when set, makes a guided player (run.warmup_skill): each action follows Guide's
	// shortest solution from the state with probability Skill, until one does not (the rest of
	// that answer is random, since the plan no longer fits the state the actions lead to).
	Guide envs.Planner
	Skill float64

	mu  sync.Mutex
	rng *rand.Rand
}

// NewExplorer makes an explorer for spec, seeded.
func NewExplorer(spec envs.Spec, mode rollout.Mode, maxActions int, seed uint64) *Explorer {
	return &Explorer{Spec: spec, Mode: mode, MaxActions: max(1, maxActions), rng: rand.New(rand.NewPCG(seed, 0x4558504c))}
}

// ExplorerModel is the model name the explorer answers with.
const ExplorerModel = "explorer"

// Generate implements rollout.LLM in chat mode.
func (e *Explorer) Generate(_ context.Context, req rollout.GenRequest) (rollout.GenResponse, error) {
	if len(req.Messages) == 0 {
		return rollout.GenResponse{}, fmt.Errorf("explorer: chat mode only (no messages)")
	}
	state := rollout.StateOf(req.Messages[len(req.Messages)-1].Content)
	var plan []string
	if e.Guide != nil && e.Skill > 0 {
		// A state the planner cannot read (a format it does not know, an unsolvable position)
		// gets random actions: the player is a mixture, not an oracle.
		plan, _ = e.Guide.Plan(state)
	}
	e.mu.Lock()
	n := 1 + e.rng.IntN(min(3, e.MaxActions))
	actions := make([]string, n)
	following := true
	for i := range actions {
		if following = following && i < len(plan) && e.rng.Float64() < e.Skill; following {
			actions[i] = plan[i]
		} else {
			actions[i] = e.action()
		}
	}
	e.mu.Unlock()
	wm := e.Mode == rollout.WorldModel
	text := worldmodel.Reply{Observation: state, Prediction: state, Reasoning: "I will try " + strings.Join(actions, ", ") + ".", Actions: actions}.Render(wm)
	return rollout.GenResponse{Text: text, Model: ExplorerModel, FinishReason: "stop"}, nil
}

// action draws one action: a name from the spec, or for r,c,v environments (Sudoku) a random cell
// and value.
func (e *Explorer) action() string {
	if len(e.Spec.Actions) > 0 {
		return e.Spec.Actions[e.rng.IntN(len(e.Spec.Actions))]
	}
	n := 4
	if strings.HasPrefix(e.Spec.Variant, "9") {
		n = 9
	}
	return fmt.Sprintf("%d,%d,%d", 1+e.rng.IntN(n), 1+e.rng.IntN(n), 1+e.rng.IntN(n))
}
