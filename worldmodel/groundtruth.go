package worldmodel

import (
	"strings"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/model/chat"
)

// Example is one conversation to fine-tune on, with where it came from.
type Example struct {
	Messages []chat.Message `json:"messages"`
	Env      string         `json:"env,omitempty"`
	Seed     int64          `json:"seed,omitempty"`
	Source   string         `json:"source,omitempty"`
}

// GroundTruth rebuilds a self-play trajectory as a conversation under system (docs/method.md,
// step 2): with replace, each assistant turn's <observation> body becomes the true state at the
// start of its turn and its <prediction> body the true state after all of the turn's actions.
// Turns without the tags stay as they are. The conversation is rebuilt from the turns, so later
// turns' histories hold the corrected earlier ones. With replace false (the self-belief ablation)
// the text is kept as the policy wrote it.
func GroundTruth(tr *bus.Trajectory, system string, replace bool) Example {
	msgs := []chat.Message{{Role: "system", Content: system}}
	for k, turn := range tr.Turns {
		user, assistant := "", ""
		for _, m := range turn.Messages {
			switch m.Role {
			case "user":
				user = m.Content
			case "assistant":
				assistant = m.Content
			}
		}
		if replace {
			after := tr.FinalState
			if k+1 < len(tr.Turns) {
				after = tr.Turns[k+1].State
			}
			assistant = replaceBody(replaceBody(assistant, Observation, turn.State), Prediction, after)
		}
		msgs = append(msgs, chat.Message{Role: "user", Content: user}, chat.Message{Role: "assistant", Content: assistant})
	}
	return Example{Messages: msgs, Env: tr.Env, Seed: tr.Seed, Source: tr.ID}
}

// Filter keeps the conversations whose every assistant turn is a well-formed world-model turn
// (docs/method.md, step 3), and drops repeated conversations (the same prompts and responses),
// keeping the first. The paper filters turns; spa trains whole conversations, so a conversation
// with a bad turn is dropped rather than cut, which keeps every kept turn's context as it was
// played.
func Filter(exs []Example) (kept []Example, malformed, duplicate int) {
	seen := map[string]bool{}
	for _, ex := range exs {
		ok := true
		var key strings.Builder
		for _, m := range ex.Messages {
			key.WriteString(m.Role + "\x00" + m.Content + "\x00")
			if m.Role == "assistant" && !Parse(m.Content).Wellformed(true) {
				ok = false
			}
		}
		switch {
		case !ok:
			malformed++
		case seen[key.String()]:
			duplicate++
		default:
			seen[key.String()] = true
			kept = append(kept, ex)
		}
	}
	return kept, malformed, duplicate
}

// Span is a piece of a response: a state body (State) or the text around them.
type Span struct {
	Text  string
	State bool
}

// StateSpans cuts a response into text and state bodies (<observation> and <prediction>), in
// order; the pieces concatenate to the response.
func StateSpans(s string) []Span {
	var out []Span
	for s != "" {
		at, tag := -1, ""
		for _, t := range StateTags {
			if i := strings.Index(s, open(t)); i >= 0 && (at < 0 || i < at) {
				at, tag = i, t
			}
		}
		if at < 0 {
			return append(out, Span{Text: s})
		}
		start := at + len(open(tag))
		end := strings.Index(s[start:], closing(tag))
		if end < 0 {
			return append(out, Span{Text: s})
		}
		out = append(out, Span{Text: s[:start]}, Span{Text: s[start : start+end], State: true})
		s = s[start+end:]
	}
	return out
}
