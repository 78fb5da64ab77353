package rollout

import (
	"github.com/spa-rl/spa/worldmodel"
)

// FormatPenalty is added to a turn whose answer does not parse or holds an invalid action (docs/method.md).
const FormatPenalty = -0.1

// Parsed is what a response says.
type Parsed struct {
	Think       string
	Observation string
	Prediction  string
	Answer      string
	// Actions are the answer's actions in order, at most MaxActionsPerTurn of them.
	Actions []string
	// FormatOK is false when the response breaks the format of its mode (worldmodel.Response's
	// Wellformed).
	FormatOK bool
}

// Parse reads a response with worldmodel.Parse. It never fails: anything it cannot read is a
// format error, and the actions it can find are still returned (so the environment judges them).
func Parse(response string, mode Mode, maxActions int) Parsed {
	r := worldmodel.Parse(response)
	p := Parsed{Think: r.Think, Observation: r.Observation, Prediction: r.Prediction, Answer: r.Answer, Actions: r.Actions,
		FormatOK: r.Wellformed(mode == WorldModel)}
	if maxActions > 0 && len(p.Actions) > maxActions {
		p.Actions = p.Actions[:maxActions]
	}
	return p
}
