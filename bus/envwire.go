package bus

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/spa-rl/spa/envs"
)

// EnvProtocol is the version of the environment wire protocol. Hosts refuse requests that name
// a newer one with CodeUnsupportedProtocol.
const EnvProtocol = 1

// Seed bounds: 2^53-1 is the largest integer every JSON implementation (JavaScript's included)
// reads exactly, so a seed means the same puzzle in every language.
const MaxSeed = 1<<53 - 1

// MaxActionBytes bounds an action string; an agent that writes more is broken, not playing.
const MaxActionBytes = 4096

// MaxObservationBytes bounds one rendering in a reply: a state is a prompt's worth of text, and a
// host that sends more would fill prompts and trajectories with it.
const MaxObservationBytes = 64 << 10

// Error codes of the environment protocol.
const (
	// CodeBadRequest: the body is not JSON, or a field has the wrong type or is missing.
	CodeBadRequest = "bad_request"
	// CodeUnsupportedProtocol: the request names a protocol version the host does not speak.
	CodeUnsupportedProtocol = "unsupported_protocol"
	// CodeUnknownEnv: no host serves the environment. NATS reports this as "no responders"; the
	// clients turn that into this code, so it never travels in a reply body.
	CodeUnknownEnv = "unknown_env"
	// CodeUnknownVariant: the host serves the environment but not this variant.
	CodeUnknownVariant = "unknown_variant"
	// CodeBadSeed: the seed is missing, negative, fractional or above MaxSeed.
	CodeBadSeed = "bad_seed"
	// CodeBadAction: the action is missing, not a string, too long or not UTF-8. An action that
	// parses but breaks the rules is not an error: the step reply says valid=false.
	CodeBadAction = "bad_action"
	// CodeUnknownSession: the host has no such session (never made, closed, or expired).
	CodeUnknownSession = "unknown_session"
	// CodeEpisodeDone: a step after the episode ended.
	CodeEpisodeDone = "episode_done"
	// CodeUnknownOp: the host subject got an operation it does not implement.
	CodeUnknownOp = "unknown_op"
	// CodeOverloaded: the host holds its maximum number of sessions; try again or add hosts.
	CodeOverloaded = "overloaded"
	// CodeHostGone: the host that owns the session stopped answering (client-side, like unknown_env).
	CodeHostGone = "host_gone"
	// CodeInternal: the environment failed in a way that is not the caller's fault.
	CodeInternal = "internal"
)

// ErrorCodes lists every code, for docs and tests.
var ErrorCodes = []string{
	CodeBadRequest, CodeUnsupportedProtocol, CodeUnknownEnv, CodeUnknownVariant, CodeBadSeed,
	CodeBadAction, CodeUnknownSession, CodeEpisodeDone, CodeUnknownOp, CodeOverloaded,
	CodeHostGone, CodeInternal,
}

// KnownCode reports whether code is one of ErrorCodes.
func KnownCode(code string) bool {
	for _, c := range ErrorCodes {
		if c == code {
			return true
		}
	}
	return false
}

// EnvError is a structured protocol error: {"error":{"code":"...","message":"..."}}.
type EnvError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *EnvError) Error() string { return fmt.Sprintf("env %s: %s", e.Code, e.Message) }

// EnvUnavailable reports whether err means no env host could be reached for now (none
// subscribed, the session's host gone, no answer in time, or the connection to NATS down) rather
// than a bad request: the episode can be played again from the start on another host.
func EnvUnavailable(err error) bool {
	switch {
	case errors.Is(err, &EnvError{Code: CodeUnknownEnv}), errors.Is(err, &EnvError{Code: CodeHostGone}):
		return true
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	}
	return false
}

// Is lets errors.Is match on the code alone: errors.Is(err, &EnvError{Code: CodeBadSeed}).
func (e *EnvError) Is(target error) bool {
	t, ok := target.(*EnvError)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// ErrorCode returns the protocol code carried by err, or "".
func ErrorCode(err error) string {
	var e *EnvError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Envelope is the part every message shares: the protocol version and, in replies, an error.
type Envelope struct {
	Protocol int       `json:"protocol"`
	Error    *EnvError `json:"error,omitempty"`
}

// Header returns the envelope, for code that handles every reply type alike.
func (e *Envelope) Header() *Envelope { return e }

// Reply is implemented by every reply type (they embed Envelope).
type Reply interface{ Header() *Envelope }

// SpecRequest asks for an environment's description (subject spa.env.<env>.spec).
type SpecRequest struct {
	Protocol int    `json:"protocol"`
	Variant  string `json:"variant,omitempty"`
}

// SpecReply describes the environment.
type SpecReply struct {
	Envelope
	Spec *envs.Spec `json:"spec,omitempty"`
}

// ResetRequest starts an episode (subject spa.env.<env>.reset). Seed is a pointer so that a
// missing seed is an error rather than seed 0.
type ResetRequest struct {
	Protocol int              `json:"protocol"`
	Variant  string           `json:"variant,omitempty"`
	Seed     *json.RawMessage `json:"seed"`
}

// Observation holds the state rendered in every mode the environment supports, so a remote
// env renders without another round trip.
type Observation map[envs.RenderMode]string

// ResetReply names the new session and the subject prefix of the host that owns it.
type ResetReply struct {
	Envelope
	Session string `json:"session,omitempty"`
	// Subject is the host's prefix: send step/close/explore to Subject+".step" and so on.
	Subject     string      `json:"subject,omitempty"`
	Variant     string      `json:"variant,omitempty"`
	Observation Observation `json:"observation,omitempty"`
	// TTLMillis is how long the host keeps an idle session.
	TTLMillis int64 `json:"ttl_ms,omitempty"`
	// Explore is true when the host answers <subject>.explore with environment-aware random
	// actions; otherwise clients draw from the spec's action names.
	Explore bool `json:"explore,omitempty"`
}

// StepRequest applies one action (subject <host>.step).
type StepRequest struct {
	Protocol int              `json:"protocol"`
	Session  string           `json:"session"`
	Action   *json.RawMessage `json:"action"`
}

// StepReply is the outcome of an action and the state after it.
type StepReply struct {
	Envelope
	envs.Step
	Observation Observation `json:"observation,omitempty"`
}

// CloseRequest ends a session (subject <host>.close); its reply is a bare Envelope.
type CloseRequest struct {
	Protocol int    `json:"protocol"`
	Session  string `json:"session"`
}

// ExploreRequest asks for a random well-formed action for the session's current state
// (subject <host>.explore), drawn from Seed, an integer in [0, MaxSeed] as for reset. Hosts may
// answer unknown_op.
type ExploreRequest struct {
	Protocol int              `json:"protocol"`
	Session  string           `json:"session"`
	Seed     *json.RawMessage `json:"seed"`
}

// ExploreReply carries the proposed action.
type ExploreReply struct {
	Envelope
	Action string `json:"action"`
}

// HostInfo is a host's answer on HostsSubject: which environment it serves, which variants (empty:
// all), and how many sessions it holds.
type HostInfo struct {
	Envelope
	Env      string   `json:"env"`
	Host     string   `json:"host"`
	Variants []string `json:"variants"`
	Sessions int      `json:"sessions"`
	// Runtime names the host's implementation ("go", "node", "python"), for operators.
	Runtime string `json:"runtime,omitempty"`
}

// ErrorReply encodes a reply that carries only an error.
func ErrorReply(code, format string, args ...any) []byte {
	b, _ := json.Marshal(Envelope{Protocol: EnvProtocol, Error: &EnvError{Code: code, Message: fmt.Sprintf(format, args...)}})
	return b
}
