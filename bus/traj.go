package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// TrajectorySchema is the version of the Trajectory encoding. Consumers refuse newer versions
// rather than misread them.
const TrajectorySchema = 1

// Trajectory is one episode as the learner trains on it: the exact tokens that were sampled, with
// their behaviour logprobs, and what the environment said about them.
type Trajectory struct {
	Schema int `json:"schema"`
	// ID is unique per episode; it is the JetStream message id, so a re-published trajectory is
	// stored once.
	ID      string `json:"id"`
	Run     string `json:"run"`
	Env     string `json:"env"`
	Variant string `json:"variant"`
	Seed    int64  `json:"seed"`
	// Group ties the episodes that share a seed (GRPO-style groups, filtering by in-group std).
	Group string `json:"group"`
	// PolicyVersion is the policy that sampled every turn; Model is the name the server answered with.
	PolicyVersion int64  `json:"policy_version"`
	Model         string `json:"model"`
	// Mode is the prompt mode ("world_model" or "base"); Render the state rendering ("raw", "coords").
	Mode   string `json:"mode,omitempty"`
	Render string `json:"render,omitempty"`
	Worker string `json:"worker,omitempty"`
	Turns  []Turn `json:"turns"`
	// FinalState is the state after the last turn (each turn's State is the one before it).
	FinalState string  `json:"final_state,omitempty"`
	Success    bool    `json:"success"`
	Reward     float64 `json:"reward"`
	Timing     Timing  `json:"timing"`
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Turn is one model response and what the environment made of it.
type Turn struct {
	// Messages are those this turn added: the environment's user message, then the assistant's.
	Messages []Message `json:"messages"`
	// State is the rendered state shown to the policy at the start of the turn.
	State string `json:"state,omitempty"`
	// PromptIDs are the tokens appended to the episode's sequence before the response (the
	// environment's message and the chat template around it). The first turn's PromptIDs hold
	// the whole initial prompt. They are never trained on.
	PromptIDs TokenIDs `json:"prompt_ids"`
	// ResponseIDs are the sampled tokens; Logprobs their sampling logprobs, one per token;
	// LossMask, one per token, 1 where the token is trained on and 0 where it is not.
	ResponseIDs TokenIDs `json:"response_ids"`
	Logprobs    LogProbs `json:"logprobs"`
	LossMask    Mask     `json:"loss_mask"`
	// Reward is the environment's reward for this turn plus any format penalty.
	Reward float64 `json:"reward"`
	// Actions are the parsed actions in order; Valid says, per action, whether the environment
	// accepted it. FormatOK is false when the response broke the answer format.
	Actions  []string `json:"actions"`
	Valid    []bool   `json:"valid"`
	FormatOK bool     `json:"format_ok"`
	Done     bool     `json:"done"`
}

// Timing records where an episode's time went.
type Timing struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// GenerateSeconds is the time spent waiting for the model, EnvSeconds for the environment.
	GenerateSeconds float64 `json:"generate_s"`
	EnvSeconds      float64 `json:"env_s"`
}

// Validate checks what the learner relies on: identity fields, and per-turn arrays of equal length.
func (t *Trajectory) Validate() error {
	var errs []error
	if t.Schema != TrajectorySchema {
		errs = append(errs, fmt.Errorf("schema %d, want %d", t.Schema, TrajectorySchema))
	}
	if t.ID == "" {
		errs = append(errs, errors.New("empty id"))
	}
	if err := CheckName("run", t.Run); err != nil {
		errs = append(errs, err)
	}
	if t.Env == "" {
		errs = append(errs, errors.New("empty env"))
	}
	for name, v := range map[string]float64{"reward": t.Reward, "generate_s": t.Timing.GenerateSeconds, "env_s": t.Timing.EnvSeconds} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("%s is %v", name, v))
		}
	}
	if t.PolicyVersion < 0 {
		errs = append(errs, fmt.Errorf("policy_version %d < 0", t.PolicyVersion))
	}
	for i, turn := range t.Turns {
		if math.IsNaN(turn.Reward) || math.IsInf(turn.Reward, 0) {
			errs = append(errs, fmt.Errorf("turn %d: reward is %v", i, turn.Reward))
		}
		n := len(turn.ResponseIDs)
		if len(turn.Logprobs) != n || len(turn.LossMask) != n {
			errs = append(errs, fmt.Errorf("turn %d: %d response ids, %d logprobs, %d loss mask entries", i, n, len(turn.Logprobs), len(turn.LossMask)))
		}
		if len(turn.Valid) != len(turn.Actions) {
			errs = append(errs, fmt.Errorf("turn %d: %d actions, %d validity flags", i, len(turn.Actions), len(turn.Valid)))
		}
		for j, lp := range turn.Logprobs {
			if math.IsNaN(float64(lp)) || math.IsInf(float64(lp), 0) || lp > 0 {
				errs = append(errs, fmt.Errorf("turn %d: logprobs[%d] = %v, want a finite value <= 0", i, j, lp))
				break
			}
		}
		for j, m := range turn.LossMask {
			if m != 0 && m != 1 {
				errs = append(errs, fmt.Errorf("turn %d: loss_mask[%d] = %d, want 0 or 1", i, j, m))
				break
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("trajectory %q: %w", t.ID, errors.Join(errs...))
	}
	return nil
}

// EncodeTrajectory validates and encodes t for the stream.
func EncodeTrajectory(t *Trajectory) ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return appendTrajectory(make([]byte, 0, 4096), t), nil
}

// DecodeTrajectory decodes and validates one stream message.
func DecodeTrajectory(data []byte) (*Trajectory, error) {
	var t Trajectory
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("decode trajectory: %w", err)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}
