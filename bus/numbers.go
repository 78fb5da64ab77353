package bus

import (
	"bytes"
	"fmt"
	"strconv"
)

// Number arrays are most of a trajectory's bytes. encoding/json handles them one reflected
// element at a time, which made decoding the learner's bottleneck (8.9k trajectories/s of 4 KiB
// on two cores); these types read and write them directly. The JSON is unchanged: plain arrays.

// TokenIDs is a JSON array of token ids.
type TokenIDs []int32

// LogProbs is a JSON array of log-probabilities.
type LogProbs []float32

// Mask is a JSON array of 0/1 flags.
type Mask []int8

// MarshalJSON writes the ids as a JSON array.
func (s TokenIDs) MarshalJSON() ([]byte, error) { return appendInts(nil, s), nil }

// MarshalJSON writes the log-probabilities as a JSON array with float32 precision.
func (s LogProbs) MarshalJSON() ([]byte, error) { return appendFloat32s(nil, s), nil }

// MarshalJSON writes the flags as a JSON array of numbers.
func (s Mask) MarshalJSON() ([]byte, error) { return appendInts(nil, s), nil }

// UnmarshalJSON reads a JSON array of integers that fit in int32.
func (s *TokenIDs) UnmarshalJSON(data []byte) error {
	v, err := parseArray(data, "token id", func(tok string) (int32, error) {
		n, err := strconv.ParseInt(tok, 10, 32)
		return int32(n), err
	})
	*s = v
	return err
}

// UnmarshalJSON reads a JSON array of numbers as float32.
func (s *LogProbs) UnmarshalJSON(data []byte) error {
	v, err := parseArray(data, "logprob", func(tok string) (float32, error) {
		f, err := strconv.ParseFloat(tok, 32)
		return float32(f), err
	})
	*s = v
	return err
}

// UnmarshalJSON reads a JSON array of small integers.
func (s *Mask) UnmarshalJSON(data []byte) error {
	v, err := parseArray(data, "mask value", func(tok string) (int8, error) {
		n, err := strconv.ParseInt(tok, 10, 8)
		return int8(n), err
	})
	*s = v
	return err
}

// parseArray reads a JSON array of numbers (null gives nil, [] an empty slice). encoding/json has
// already checked that data is valid JSON, so what is left to reject is anything but numbers.
func parseArray[T any](data []byte, what string, parse func(string) (T, error)) ([]T, error) {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		return nil, nil
	}
	if len(data) < 2 || data[0] != '[' || data[len(data)-1] != ']' {
		return nil, fmt.Errorf("want a JSON array of numbers, got %.20q", data)
	}
	body := data[1 : len(data)-1]
	out := make([]T, 0, bytes.Count(body, []byte(","))+1)
	if len(bytes.TrimSpace(body)) == 0 {
		return out, nil
	}
	for {
		i := bytes.IndexByte(body, ',')
		tok := body
		if i >= 0 {
			tok = body[:i]
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || !(tok[0] == '-' || tok[0] >= '0' && tok[0] <= '9') {
			return nil, fmt.Errorf("%s: want a number, got %.20q", what, tok)
		}
		v, err := parse(string(tok))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", what, tok, err)
		}
		out = append(out, v)
		if i < 0 {
			return out, nil
		}
		body = body[i+1:]
	}
}
