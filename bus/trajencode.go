package bus

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendTrajectory writes t as JSON without reflection. encoding/json validates and compacts
// the output of every MarshalJSON, which cost more than the encoding itself; writing the whole
// document here makes publishing about twice as fast. The output decodes with encoding/json into
// the same Trajectory (tested), field for field as the struct tags name them.
func appendTrajectory(b []byte, t *Trajectory) []byte {
	b = append(b, `{"schema":`...)
	b = strconv.AppendInt(b, int64(t.Schema), 10)
	b = appendStringField(b, "id", t.ID)
	b = appendStringField(b, "run", t.Run)
	b = appendStringField(b, "env", t.Env)
	b = appendStringField(b, "variant", t.Variant)
	b = append(b, `,"seed":`...)
	b = strconv.AppendInt(b, t.Seed, 10)
	b = appendStringField(b, "group", t.Group)
	b = append(b, `,"policy_version":`...)
	b = strconv.AppendInt(b, t.PolicyVersion, 10)
	b = appendStringField(b, "model", t.Model)
	if t.Mode != "" {
		b = appendStringField(b, "mode", t.Mode)
	}
	if t.Render != "" {
		b = appendStringField(b, "render", t.Render)
	}
	if t.Worker != "" {
		b = appendStringField(b, "worker", t.Worker)
	}
	b = append(b, `,"turns":`...)
	b = appendSlice(b, t.Turns, func(b []byte, turn Turn) []byte { return appendTurn(b, &turn) })
	if t.FinalState != "" {
		b = appendStringField(b, "final_state", t.FinalState)
	}
	b = append(b, `,"success":`...)
	b = strconv.AppendBool(b, t.Success)
	b = append(b, `,"reward":`...)
	b = appendFloat(b, t.Reward)
	b = append(b, `,"timing":{"started":`...)
	b = appendTime(b, t.Timing.Started)
	b = append(b, `,"finished":`...)
	b = appendTime(b, t.Timing.Finished)
	b = append(b, `,"generate_s":`...)
	b = appendFloat(b, t.Timing.GenerateSeconds)
	b = append(b, `,"env_s":`...)
	b = appendFloat(b, t.Timing.EnvSeconds)
	return append(b, "}}"...)
}

func appendTurn(b []byte, t *Turn) []byte {
	b = append(b, `{"messages":`...)
	b = appendSlice(b, t.Messages, func(b []byte, m Message) []byte {
		b = append(b, `{"role":`...)
		b = appendString(b, m.Role)
		b = append(b, `,"content":`...)
		b = appendString(b, m.Content)
		return append(b, '}')
	})
	if t.State != "" {
		b = appendStringField(b, "state", t.State)
	}
	b = append(b, `,"prompt_ids":`...)
	b = appendInts(b, t.PromptIDs)
	b = append(b, `,"response_ids":`...)
	b = appendInts(b, t.ResponseIDs)
	b = append(b, `,"logprobs":`...)
	b = appendFloat32s(b, t.Logprobs)
	b = append(b, `,"loss_mask":`...)
	b = appendInts(b, t.LossMask)
	b = append(b, `,"reward":`...)
	b = appendFloat(b, t.Reward)
	b = append(b, `,"actions":`...)
	b = appendSlice(b, t.Actions, appendString)
	b = append(b, `,"valid":`...)
	b = appendSlice(b, t.Valid, strconv.AppendBool)
	b = append(b, `,"format_ok":`...)
	b = strconv.AppendBool(b, t.FormatOK)
	b = append(b, `,"done":`...)
	b = strconv.AppendBool(b, t.Done)
	return append(b, '}')
}

// appendSlice writes s as a JSON array (nil as null, as encoding/json does), each element with f.
func appendSlice[T any](b []byte, s []T, f func([]byte, T) []byte) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, v := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = f(b, v)
	}
	return append(b, ']')
}

func appendInts[T int8 | int32](b []byte, s []T) []byte {
	return appendSlice(b, s, func(b []byte, v T) []byte { return strconv.AppendInt(b, int64(v), 10) })
}

func appendFloat32s(b []byte, s []float32) []byte {
	return appendSlice(b, s, func(b []byte, v float32) []byte { return strconv.AppendFloat(b, float64(v), 'g', -1, 32) })
}

// appendFloat writes a finite float; Validate has rejected the others, but JSON has no NaN,
// so write 0 rather than an invalid document if one slips through.
func appendFloat(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendStringField(b []byte, key, s string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, s)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string, replacing invalid UTF-8 with U+FFFD as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but end lines in JavaScript; escape them as
		// encoding/json does.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
