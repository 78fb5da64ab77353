// Package rollout plays multi-turn episodes against any OpenAI-compatible server and records them
// at the token level: prompts as docs/method.md lays them out, response parsing, an LLM client on
// go-openai (token ids in and out for training, chat for evaluation), episodes, workers that
// publish trajectories to the bus, and Pass@k evaluation. It needs no libtorch.
package rollout

import (
	"fmt"
	"strings"

	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/worldmodel"
)

// Mode is the prompt mode.
type Mode string

const (
	// WorldModel asks for <observation> and <prediction> inside <think> before <answer>: the
	// self-play and SFT stages.
	WorldModel Mode = "world_model"
	// Base asks for <think>…</think><answer>…</answer>: PPO and evaluation.
	Base Mode = "base"
)

// ParseMode accepts "world_model" (or "world-model") and "base".
func ParseMode(s string) (Mode, error) {
	switch strings.ReplaceAll(strings.ToLower(s), "-", "_") {
	case "world_model", "worldmodel", "wm":
		return WorldModel, nil
	case "base":
		return Base, nil
	}
	return "", fmt.Errorf("unknown prompt mode %q (want world_model or base)", s)
}

// SystemPrompt is the paper's system message.
const SystemPrompt = "You're a helpful assistant."

// PromptOptions shape the text of an episode.
type PromptOptions struct {
	Mode   Mode
	Render envs.RenderMode
	// MaxActionsPerTurn is how many actions one answer may hold (SPA: 5).
	MaxActionsPerTurn int
}

// formatLine is the required output format, repeated every turn.
func (o PromptOptions) formatLine() string {
	return worldmodel.Instruction(o.Mode == WorldModel, o.MaxActionsPerTurn)
}

// Intro is the first user message's head: instruction, legend, actions and budget.
func (o PromptOptions) Intro(spec envs.Spec) string {
	var b strings.Builder
	b.WriteString(spec.Instructions)
	if o.Mode == WorldModel && spec.WorldModelInstructions != "" {
		b.WriteString("\n" + spec.WorldModelInstructions)
	}
	b.WriteString("\nSymbols: " + spec.Legend)
	if len(spec.Actions) > 0 {
		b.WriteString("\nActions: " + strings.Join(spec.Actions, ", ") + ".")
	}
	if spec.ActionFormat != "" {
		b.WriteString(" Write an action as " + spec.ActionFormat + ".")
	}
	fmt.Fprintf(&b, "\nYou have %d actions in total.", spec.MaxActions)
	return b.String()
}

// TurnText is one turn's state block: Turn k, the state, actions left and the format.
func (o PromptOptions) TurnText(spec envs.Spec, turn int, state string, actionsLeft int) string {
	return fmt.Sprintf("Turn %d:\nState:\n%s\nYou have %d actions left. %s", turn, state, actionsLeft, o.formatLine())
}

// StateOf cuts the rendered state out of a turn's user message (TurnText's "State:\n<state>\nYou
// have ..."), or returns "" when the message holds none.
func StateOf(user string) string {
	_, rest, ok := strings.Cut(user, "State:\n")
	if !ok {
		return ""
	}
	if i := strings.LastIndex(rest, "\nYou have "); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// RewardText reports a turn's reward, opening the next user message.
func RewardText(reward float64) string { return fmt.Sprintf("Reward: %s", formatReward(reward)) }

func formatReward(r float64) string {
	s := fmt.Sprintf("%.2f", r)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" || s == "" {
		s = "0"
	}
	return s
}
