package rollout

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/tokenizer"
)

// EpisodeOptions configure one episode.
type EpisodeOptions struct {
	PromptOptions
	// MaxTurns bounds the turns (SPA: 5).
	MaxTurns int
	// MaxTokens bounds each response.
	MaxTokens   int
	Temperature float64
	TopP        float64
	TopK        int
	// Model is the name sent to the server ("" lets a spa server pick its latest version).
	Model string
	// Version is the policy version the run's KV announced when the episode started. It is
	// recorded when the served name carries none ("-vN"), as with servers that reload weights
	// under one name (vLLM full reload, SGLang).
	Version int64
	// Identity recorded in the trajectory.
	Run, ID, Group, Worker string
	Seed                   int64
	// SampleSeed, when set, seeds the server's sampler per turn (SampleSeed + turn).
	SampleSeed *int64
}

// Tokens is what token mode needs from the policy's checkpoint.
type Tokens struct {
	Tok      *tokenizer.Tokenizer
	Template *chat.Template
	// endTurn is <|im_end|>'s id: a response that lacks it (cut by max_tokens) gets one appended
	// before the next user message, so the sequence stays well-formed ChatML.
	endTurn int
}

// NewTokens checks that the tokenizer has ChatML's markers.
func NewTokens(tok *tokenizer.Tokenizer, tmpl *chat.Template) (*Tokens, error) {
	end, ok := tok.ID("<|im_end|>")
	if _, ok2 := tok.ID("<|im_start|>"); !ok || !ok2 {
		return nil, errors.New("token mode needs a ChatML tokenizer (<|im_start|>, <|im_end|>)")
	}
	return &Tokens{Tok: tok, Template: tmpl, endTurn: end}, nil
}

// LoadTokens reads a checkpoint directory's tokenizer.json and tokenizer_config.json for token mode.
func LoadTokens(dir string) (*Tokens, error) {
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	tmpl, err := chat.Load(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return nil, err
	}
	return NewTokens(tok, tmpl)
}

// renderMode is want when the environment renders it, else its first mode: an environment
// served from elsewhere (a Gymnasium adapter) may offer only the raw text, and a mode it lacks
// would render as nothing.
func renderMode(spec envs.Spec, want envs.RenderMode) envs.RenderMode {
	if len(spec.RenderModes) == 0 {
		return want
	}
	for _, m := range spec.RenderModes {
		if m == want {
			return want
		}
	}
	return spec.RenderModes[0]
}

// Play runs one episode of env (already made, not yet reset) with llm and returns its trajectory.
// With tokens it runs in token mode: the episode's token sequence is built once and only ever
// appended to, so the learner trains on exactly what was sampled. Without, it runs in chat mode
// (messages are re-sent each turn) and the trajectory has no token ids.
func Play(ctx context.Context, env envs.Env, llm LLM, tokens *Tokens, o EpisodeOptions) (*bus.Trajectory, error) {
	if o.MaxTurns <= 0 {
		o.MaxTurns = 5
	}
	if o.MaxActionsPerTurn <= 0 {
		o.MaxActionsPerTurn = 5
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 256
	}
	if o.Render == "" {
		o.Render = envs.Coords
	}
	spec := env.Spec()
	o.Render = renderMode(spec, o.Render)
	started := time.Now()
	var envTime, genTime time.Duration
	t0 := time.Now()
	if err := env.Reset(o.Seed); err != nil {
		return nil, fmt.Errorf("reset %s seed %d: %w", spec.Name, o.Seed, err)
	}
	envTime += time.Since(t0)
	tr := &bus.Trajectory{
		Schema: bus.TrajectorySchema, ID: o.ID, Run: o.Run, Env: spec.Name, Variant: spec.Variant, Seed: o.Seed,
		Group: o.Group, Mode: string(o.Mode), Render: string(o.Render), Worker: o.Worker,
	}
	state := env.Render(o.Render)
	left := spec.MaxActions
	user := o.Intro(spec) + "\n\n" + o.TurnText(spec, 1, state, left)
	msgs := []chat.Message{{Role: "system", Content: SystemPrompt}, {Role: "user", Content: user}}
	var seq []int
	var delta []int
	if tokens != nil {
		text, err := tokens.Template.Render(msgs, true)
		if err != nil {
			return nil, err
		}
		seq = tokens.Tok.Encode(text)
		delta = seq
	}
	var version string
	for turn := 1; turn <= o.MaxTurns; turn++ {
		req := GenRequest{Model: o.Model, MaxTokens: o.MaxTokens, Temperature: o.Temperature, TopP: o.TopP, TopK: o.TopK}
		if version != "" {
			// Later turns ask for the version that answered the first: a request for an alias
			// ("spa", the latest) would follow a policy swap in the middle of the episode.
			req.Model = version
		}
		if o.SampleSeed != nil {
			s := *o.SampleSeed + int64(turn)
			req.Seed = &s
		}
		if tokens != nil {
			req.PromptIDs = seq
		} else {
			req.Messages = msgs
		}
		t0 := time.Now()
		resp, err := llm.Generate(ctx, req)
		genTime += time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("turn %d: %w", turn, err)
		}
		if version == "" {
			version = resp.Model
		} else if resp.Model != version {
			// A policy swap mid-episode would mix behaviour policies in one trajectory; the
			// learner needs to know, so keep the first and record the change in the error.
			return nil, fmt.Errorf("turn %d: the server answered as %q after %q; an episode must stay on one policy version", turn, resp.Model, version)
		}
		parsed := Parse(resp.Text, o.Mode, o.MaxActionsPerTurn)
		t := bus.Turn{
			Messages: []bus.Message{{Role: "user", Content: msgs[len(msgs)-1].Content}, {Role: "assistant", Content: resp.Text}},
			State:    state, FormatOK: parsed.FormatOK, Actions: []string{}, Valid: []bool{},
		}
		if tokens != nil {
			t.PromptIDs = append(bus.TokenIDs(nil), toInt32(delta)...)
			t.ResponseIDs = append(bus.TokenIDs(nil), toInt32(resp.TokenIDs)...)
			t.Logprobs = append(bus.LogProbs(nil), resp.Logprobs...)
			t.LossMask = make(bus.Mask, len(resp.TokenIDs))
			for i := range t.LossMask {
				t.LossMask[i] = 1
			}
			seq = append(seq, resp.TokenIDs...)
		}
		// Execute the answer's actions until the episode ends.
		invalid := !parsed.FormatOK
		done := false
		t0 = time.Now()
		for _, a := range parsed.Actions {
			st, err := env.Step(a)
			if errors.Is(err, envs.ErrEpisodeDone) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("turn %d: step %q: %w", turn, a, err)
			}
			t.Actions = append(t.Actions, a)
			t.Valid = append(t.Valid, st.Valid)
			t.Reward += st.Reward
			if !st.Valid {
				invalid = true
				continue
			}
			left--
			if st.Success {
				tr.Success = true
			}
			if st.Done {
				done = true
				break
			}
		}
		envTime += time.Since(t0)
		if invalid {
			t.Reward += FormatPenalty
		}
		if left <= 0 {
			done = true
		}
		t.Done = done || turn == o.MaxTurns
		tr.Reward += t.Reward
		state = env.Render(o.Render)
		tr.Turns = append(tr.Turns, t)
		if t.Done {
			break
		}
		next := RewardText(t.Reward) + "\n" + o.TurnText(spec, turn+1, state, left)
		msgs = append(msgs, chat.Message{Role: "assistant", Content: resp.Text}, chat.Message{Role: "user", Content: next})
		if tokens != nil {
			delta = tokens.userTurn(resp.TokenIDs, next)
			seq = append(seq, delta...)
		}
	}
	tr.FinalState = state
	tr.Model = version
	// A served name that names its version wins over the policy KV's number.
	tr.PolicyVersion = o.Version
	if _, n, ok := bus.ParseVersionName(version); ok {
		tr.PolicyVersion = n
	}
	tr.Timing = bus.Timing{Started: started.UTC(), Finished: time.Now().UTC(), GenerateSeconds: genTime.Seconds(), EnvSeconds: envTime.Seconds()}
	return tr, tr.Validate()
}

// userTurn is what follows an assistant response in the append-only sequence: <|im_end|> when
// the response was cut before it, then the next user message and the assistant header, as
// ChatML renders them.
func (t *Tokens) userTurn(response []int, user string) []int {
	delta := t.Tok.Encode("\n<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n")
	if n := len(response); n == 0 || response[n-1] != t.endTurn {
		delta = append([]int{t.endTurn}, delta...)
	}
	return delta
}

// Conversation lays out a finished conversation (system, user, then alternating assistant and
// user messages) as the token sequence an episode in token mode would have produced, with the
// assistant's tokens, its <|im_end|> included, marked. The world-model SFT data is built this way,
// so the policy is fine-tuned on exactly the layout it samples in.
func (t *Tokens) Conversation(msgs []chat.Message) (ids []int, assistant []bool, err error) {
	first := 0
	for first < len(msgs) && msgs[first].Role != "assistant" {
		first++
	}
	if first == 0 || first == len(msgs) {
		return nil, nil, errors.New("conversation: want system/user messages, then at least one assistant message")
	}
	text, err := t.Template.Render(msgs[:first], true)
	if err != nil {
		return nil, nil, err
	}
	ids = t.Tok.Encode(text)
	assistant = make([]bool, len(ids))
	for i := first; i < len(msgs); i++ {
		m := msgs[i]
		switch {
		case m.Role == "assistant" && msgs[i-1].Role != "assistant":
			resp := append(t.Tok.Encode(m.Content), t.endTurn)
			ids = append(ids, resp...)
			for range resp {
				assistant = append(assistant, true)
			}
		case m.Role == "user" && msgs[i-1].Role == "assistant":
			if i == len(msgs)-1 {
				continue // a trailing user message (the last reward) has nothing to train
			}
			delta := t.userTurn([]int{t.endTurn}, m.Content)
			ids = append(ids, delta...)
			assistant = append(assistant, make([]bool, len(delta))...)
		default:
			return nil, nil, fmt.Errorf("conversation: message %d (%s) after %s; want assistant and user messages alternating", i, m.Role, msgs[i-1].Role)
		}
	}
	return ids, assistant, nil
}

func toInt32(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}
