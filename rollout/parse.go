package rollout

import (
	"strings"
)

// FormatPenalty is added to a turn whose answer does not parse or holds an invalid action (SPA.md).
const FormatPenalty = -0.1

// Parsed is what a response says.
type Parsed struct {
	Think       string
	Observation string
	Prediction  string
	Answer      string
	// Actions are the answer's actions in order, at most MaxActionsPerTurn of them.
	Actions []string
	// FormatOK is false when the response breaks the format of its mode: no <think>…</think>
	// before <answer>…</answer>, no action, or (world-model mode) no <observation> and
	// <prediction> inside the think block.
	FormatOK bool
}

// tagBody returns the text between the first <tag> and the following </tag>, and whether both
// were found in that order.
func tagBody(s, tag string) (string, bool) {
	open, close := "<"+tag+">", "</"+tag+">"
	i := strings.Index(s, open)
	if i < 0 {
		return "", false
	}
	rest := s[i+len(open):]
	j := strings.Index(rest, close)
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

// Parse reads a response. It never fails: anything it cannot read is a format error, and the
// actions it can find are still returned (so the environment judges them).
func Parse(response string, mode Mode, maxActions int) Parsed {
	var p Parsed
	think, hasThink := tagBody(response, "think")
	answer, hasAnswer := tagBody(response, "answer")
	p.Think, p.Answer = strings.TrimSpace(think), strings.TrimSpace(answer)
	ordered := hasThink && hasAnswer && strings.Index(response, "</think>") < strings.Index(response, "<answer>")
	if mode == WorldModel {
		obs, hasObs := tagBody(think, "observation")
		pred, hasPred := tagBody(think, "prediction")
		p.Observation, p.Prediction = strings.TrimSpace(obs), strings.TrimSpace(pred)
		ordered = ordered && hasObs && hasPred
	}
	if hasAnswer {
		for _, a := range strings.Split(answer, "||") {
			if a = strings.TrimSpace(a); a != "" {
				p.Actions = append(p.Actions, a)
			}
		}
	}
	if maxActions > 0 && len(p.Actions) > maxActions {
		p.Actions = p.Actions[:maxActions]
	}
	p.FormatOK = ordered && len(p.Actions) > 0
	return p
}
