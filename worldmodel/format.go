// Package worldmodel is the paper's own half of spa (docs/method.md): the answer format in which a
// policy states what it observes and predicts what comes next before it acts,
//
//	<think><observation>…</observation>…<prediction>…</prediction></think><answer>a || b</answer>
//
// with one renderer and one parser; ground-truth replacement of self-play trajectories; the filter
// that keeps well-formed, distinct conversations; and the state spans that world-model SFT leaves
// out of the loss and that state perplexity scores. It needs no libtorch: rollout workers parse
// with it, the pipeline builds SFT data with it and the learner masks with it.
package worldmodel

import (
	"fmt"
	"strings"
)

// The format's tags.
const (
	Think       = "think"
	Observation = "observation"
	Prediction  = "prediction"
	Answer      = "answer"
)

// ActionSeparator separates the actions of one answer.
const ActionSeparator = "||"

// StateTags are the parts of a world-model response that describe the environment's state.
var StateTags = []string{Observation, Prediction}

// Reply is a response's content, to be written in the format.
type Reply struct {
	// Observation and Prediction are written only in the world-model format.
	Observation, Prediction string
	// Reasoning is the free text inside <think>, between the observation and the prediction.
	Reasoning string
	Actions   []string
}

// Render writes r in the world-model format (worldModel) or the base format
// (<think>…</think><answer>…</answer>).
func (r Reply) Render(worldModel bool) string {
	var b strings.Builder
	b.WriteString(open(Think))
	if worldModel {
		b.WriteString(open(Observation) + r.Observation + closing(Observation))
	}
	b.WriteString(r.Reasoning)
	if worldModel {
		b.WriteString(open(Prediction) + r.Prediction + closing(Prediction))
	}
	b.WriteString(closing(Think) + open(Answer) + strings.Join(r.Actions, " "+ActionSeparator+" ") + closing(Answer))
	return b.String()
}

// Instruction is the format line a prompt repeats every turn.
func Instruction(worldModel bool, maxActions int) string {
	example := Reply{Reasoning: "...", Actions: []string{"..."}}
	if worldModel {
		example = Reply{Observation: "...", Prediction: "...", Actions: []string{"..."}}
	}
	return fmt.Sprintf("Answer in the format %s, with at most %d actions separated by %s.", example.Render(worldModel), maxActions, ActionSeparator)
}

// Response is a parsed response. Bodies are trimmed; a missing part is empty.
type Response struct {
	Think, Observation, Prediction, Answer string
	// Actions are the answer's actions in order.
	Actions []string

	base, worldModel bool
}

// Parse reads a response. It never fails: Wellformed says whether the response keeps the format,
// and whatever actions it holds are returned either way, for the environment to judge.
func Parse(s string) Response {
	var r Response
	think, hasThink := body(s, Think)
	answer, hasAnswer := body(s, Answer)
	r.Think, r.Answer = strings.TrimSpace(think), strings.TrimSpace(answer)
	for _, a := range strings.Split(answer, ActionSeparator) {
		if a = strings.TrimSpace(a); a != "" {
			r.Actions = append(r.Actions, a)
		}
	}
	r.base = hasThink && hasAnswer && strings.Index(s, closing(Think)) < strings.Index(s, open(Answer)) && len(r.Actions) > 0
	obs, hasObs := body(think, Observation)
	pred, hasPred := body(think, Prediction)
	r.Observation, r.Prediction = strings.TrimSpace(obs), strings.TrimSpace(pred)
	r.worldModel = r.base && hasObs && hasPred && strings.Index(think, open(Observation)) < strings.Index(think, open(Prediction))
	return r
}

// Wellformed reports whether the response keeps the format: <think>…</think> closed before
// <answer>…</answer>, at least one action, and in the world-model format an
// <observation>…</observation> before a <prediction>…</prediction> inside the think block.
func (r Response) Wellformed(worldModel bool) bool {
	if worldModel {
		return r.worldModel
	}
	return r.base
}

func open(tag string) string    { return "<" + tag + ">" }
func closing(tag string) string { return "</" + tag + ">" }

// span finds the body of the first <tag>…</tag> in s: s[i:j].
func span(s, tag string) (i, j int, ok bool) {
	o := strings.Index(s, open(tag))
	if o < 0 {
		return 0, 0, false
	}
	i = o + len(open(tag))
	n := strings.Index(s[i:], closing(tag))
	if n < 0 {
		return 0, 0, false
	}
	return i, i + n, true
}

// body is the text of the first <tag>…</tag> in s.
func body(s, tag string) (string, bool) {
	i, j, ok := span(s, tag)
	return s[i:j], ok
}

// replaceBody puts text in place of the body of the first <tag>…</tag> in s; s stays as it is
// without one.
func replaceBody(s, tag, text string) string {
	i, j, ok := span(s, tag)
	if !ok {
		return s
	}
	return s[:i] + text + s[j:]
}
