package bus

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestHandEncoderMatchesEncodingJSON checks the reflection-free encoder against encoding/json:
// both decode to the same trajectory, including awkward strings and empty parts.
func TestHandEncoderMatchesEncodingJSON(t *testing.T) {
	full := SyntheticTrajectory("r", "id-1", 2048)
	full.Worker, full.FinalState = "w\t1", "####\n#P_#"
	full.Timing.Started = time.Date(2026, 11, 21, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	full.Turns[0].Messages = append(full.Turns[0].Messages, Message{Role: "user", Content: "quote \" back\\slash \x01 \u2028 é 😀 <tag> &"})
	full.Reward, full.Turns[0].Reward = 1e-7, -123456789.5
	sparse := &Trajectory{Schema: 1, ID: "x", Run: "r", Env: "e"}
	emptyTurn := &Trajectory{Schema: 1, ID: "y", Run: "r", Env: "e", Turns: []Turn{{}}}
	for name, tr := range map[string]*Trajectory{"full": full, "sparse": sparse, "empty turn": emptyTurn} {
		mine := appendTrajectory(nil, tr)
		if !json.Valid(mine) {
			t.Fatalf("%s: invalid JSON: %s", name, mine)
		}
		ref, err := json.Marshal(tr)
		if err != nil {
			t.Fatal(err)
		}
		var a, b Trajectory
		if err := json.Unmarshal(mine, &a); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := json.Unmarshal(ref, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: hand-encoded and encoding/json differ after decoding:\n%s\n%s", name, mine, ref)
		}
		// Generic maps compare field names and values, so a misspelt key cannot hide.
		var ma, mb map[string]any
		_ = json.Unmarshal(mine, &ma)
		_ = json.Unmarshal(ref, &mb)
		if !reflect.DeepEqual(ma, mb) {
			t.Errorf("%s: documents differ:\n%s\n%s", name, mine, ref)
		}
	}
}

func TestValidateRejectsNonFinite(t *testing.T) {
	for name, spoil := range map[string]func(*Trajectory){
		"reward":           func(t *Trajectory) { t.Reward = math.NaN() },
		"turn":             func(t *Trajectory) { t.Turns[0].Reward = math.Inf(-1) },
		"logprob":          func(t *Trajectory) { t.Turns[0].Logprobs[0] = float32(math.Inf(-1)) },
		"positive logprob": func(t *Trajectory) { t.Turns[0].Logprobs[0] = 0.5 },
	} {
		tr := SyntheticTrajectory("r", "x", 512)
		spoil(tr)
		if _, err := EncodeTrajectory(tr); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b\\c", "\x00\x1f\x7f", "\xff\xfe", "é\u2028\u2029😀", "<>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendString(nil, s)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON for %q: %s", s, out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if !utf8.ValidString(s) {
			// encoding/json replaces each invalid byte, not each run; compare with it.
			ref, _ := json.Marshal(s)
			_ = json.Unmarshal(ref, &want)
		}
		if got != want {
			t.Fatalf("%q round-trips to %q, want %q", s, got, want)
		}
	})
}

func TestNumberArraysDecode(t *testing.T) {
	var tr Turn
	in := `{"prompt_ids":[ 1, -2 ,3],"response_ids":[],"logprobs":[-0.5,-1e-3,0],"loss_mask":null}`
	if err := json.Unmarshal([]byte(in), &tr); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tr.PromptIDs, TokenIDs{1, -2, 3}) || len(tr.ResponseIDs) != 0 || tr.ResponseIDs == nil ||
		!reflect.DeepEqual(tr.Logprobs, LogProbs{-0.5, -1e-3, 0}) || tr.LossMask != nil {
		t.Errorf("decoded %+v", tr)
	}
	for _, bad := range []string{
		`{"prompt_ids":[1.5]}`, `{"prompt_ids":["1"]}`, `{"prompt_ids":[3000000000]}`,
		`{"loss_mask":[300]}`, `{"logprobs":[true]}`, `{"prompt_ids":{}}`,
	} {
		var tr Turn
		if err := json.Unmarshal([]byte(bad), &tr); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}
