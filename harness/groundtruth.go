package harness

import (
	"strings"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/rollout"
)

// replaceBody replaces the body of the first <tag>...</tag> in s; s is unchanged without one.
func replaceBody(s, tag, body string) string {
	open, close := "<"+tag+">", "</"+tag+">"
	i := strings.Index(s, open)
	if i < 0 {
		return s
	}
	j := strings.Index(s[i+len(open):], close)
	if j < 0 {
		return s
	}
	return s[:i+len(open)] + body + s[i+len(open)+j:]
}

// GroundTruth rewrites a self-play trajectory's assistant turns (SPA.md step 2): each
// <observation> body becomes the true state at the start of its turn, each <prediction> body the
// true state after all of the turn's actions. Turns without the tags stay as they are. The
// conversation is rebuilt from the turns, so later turns' histories hold the corrected earlier
// ones. With replace false (the self-belief ablation) the text is kept as the policy wrote it.
func GroundTruth(tr *bus.Trajectory, replace bool) learner.SFTExample {
	msgs := []chat.Message{{Role: "system", Content: rollout.SystemPrompt}}
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
			assistant = replaceBody(replaceBody(assistant, "observation", turn.State), "prediction", after)
		}
		msgs = append(msgs, chat.Message{Role: "user", Content: user}, chat.Message{Role: "assistant", Content: assistant})
	}
	return learner.SFTExample{Messages: msgs, Env: tr.Env, Seed: tr.Seed, Source: tr.ID}
}

// WorldModelTurn reports whether a response thinks before answering with an observation before a
// prediction inside <think> (SPA.md step 3).
func WorldModelTurn(s string) bool {
	t0, t1, a := strings.Index(s, "<think>"), strings.Index(s, "</think>"), strings.Index(s, "<answer>")
	if t0 < 0 || t1 < t0 || a < t1 {
		return false
	}
	think := s[t0:t1]
	o, p := strings.Index(think, "<observation>"), strings.Index(think, "<prediction>")
	return o >= 0 && p > o
}

// Filter keeps the conversations whose every assistant turn is a world-model turn, and drops
// repeated conversations (the same prompts and responses), keeping the first. The paper filters
// turns; spa trains whole conversations (see learner.SFTSequences), so a conversation with a bad
// turn is dropped rather than cut, which keeps every kept turn's context as it was played.
func Filter(exs []learner.SFTExample) (kept []learner.SFTExample, malformed, duplicate int) {
	seen := map[string]bool{}
	for _, ex := range exs {
		ok := true
		var key strings.Builder
		for _, m := range ex.Messages {
			key.WriteString(m.Role + "\x00" + m.Content + "\x00")
			if m.Role == "assistant" && !WorldModelTurn(m.Content) {
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
