package worldmodel

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/spa-rl/spa/bus"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected outputs in testdata/ with what the code gives")

// TestTranscripts runs the data-driven cases in testdata/: each case is a command line, its input,
// a line "----", the expected output and a line "====". go test -rewrite rewrites the expected
// outputs (then read the diff).
func TestTranscripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) < 4 {
		t.Fatalf("only %d transcript files", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			cases := 0
			lines := strings.Split(string(data), "\n")
			for i := 0; i < len(lines); i++ {
				line := lines[i]
				if line == "" || strings.HasPrefix(line, "#") {
					out.WriteString(line + "\n")
					continue
				}
				cmd := line
				var input []string
				for i++; i < len(lines) && lines[i] != "----"; i++ {
					input = append(input, lines[i])
				}
				var want []string
				for i++; i < len(lines) && lines[i] != "===="; i++ {
					want = append(want, lines[i])
				}
				if i >= len(lines) {
					t.Fatalf("%s: case %q is not closed by ----, then ====", file, cmd)
				}
				got, err := run(cmd, strings.Join(input, "\n"))
				if err != nil {
					t.Fatalf("%s: %s: %v", file, cmd, err)
				}
				if g, w := strings.TrimRight(got, "\n"), strings.Join(want, "\n"); g != w && !*rewrite {
					t.Errorf("%s: %s\ninput:\n%s\ngot:\n%s\nwant:\n%s", file, cmd, strings.Join(input, "\n"), g, w)
				}
				out.WriteString(cmd + "\n")
				for _, l := range input {
					out.WriteString(l + "\n")
				}
				fmt.Fprintf(&out, "----\n%s\n====\n", strings.TrimRight(got, "\n"))
				cases++
			}
			if cases == 0 {
				t.Fatalf("%s: no cases", file)
			}
			if *rewrite {
				if err := os.WriteFile(file, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// run carries out one transcript command on its input.
func run(cmd, input string) (string, error) {
	var b strings.Builder
	args := strings.Fields(cmd)
	switch args[0] {
	case "parse":
		r := Parse(input)
		fmt.Fprintf(&b, "think %q\nobservation %q\nprediction %q\nanswer %q\nactions %q\nwellformed base %v, world-model %v\n",
			r.Think, r.Observation, r.Prediction, r.Answer, r.Actions, r.Wellformed(false), r.Wellformed(true))
	case "render":
		var r Reply
		for _, l := range strings.Split(input, "\n") {
			k, v, _ := strings.Cut(l, ": ")
			switch k {
			case "observation":
				r.Observation = v
			case "prediction":
				r.Prediction = v
			case "reasoning":
				r.Reasoning = v
			case "actions":
				r.Actions = strings.Split(v, ", ")
			}
		}
		wm := len(args) > 1 && args[1] == "world-model"
		text := r.Render(wm)
		back := Parse(text)
		fmt.Fprintf(&b, "%s\nparses back: wellformed %v, actions %q\n", text, back.Wellformed(wm), back.Actions)
	case "instruction":
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return "", err
		}
		b.WriteString(Instruction(args[1] == "world-model", n) + "\n")
	case "groundtruth":
		var tr bus.Trajectory
		if err := json.Unmarshal([]byte(input), &tr); err != nil {
			return "", err
		}
		ex := GroundTruth(&tr, "SYSTEM", !(len(args) > 1 && args[1] == "self-belief"))
		fmt.Fprintf(&b, "env %s seed %d source %s\n", ex.Env, ex.Seed, ex.Source)
		for _, m := range ex.Messages {
			fmt.Fprintf(&b, "%s: %q\n", m.Role, m.Content)
		}
	case "filter":
		var exs []Example
		for _, l := range strings.Split(input, "\n") {
			var ex Example
			if err := json.Unmarshal([]byte(l), &ex); err != nil {
				return "", err
			}
			exs = append(exs, ex)
		}
		kept, malformed, duplicate := Filter(exs)
		var names []string
		for _, ex := range kept {
			names = append(names, ex.Source)
		}
		fmt.Fprintf(&b, "kept %v, malformed %d, duplicate %d\n", names, malformed, duplicate)
	case "spans":
		for _, s := range StateSpans(input) {
			kind := "text "
			if s.State {
				kind = "state"
			}
			fmt.Fprintf(&b, "%s %q\n", kind, s.Text)
		}
	default:
		return "", fmt.Errorf("unknown command %q", args[0])
	}
	return b.String(), nil
}

// FuzzFormat checks the invariants on any text: the state spans put together are the text; a
// world-model turn is also a base turn; a well-formed turn has an action; no action is empty or
// holds the separator; and a reply rendered from the parts parses back to the same actions.
func FuzzFormat(f *testing.F) {
	for _, s := range []string{"<think><observation>a</observation><prediction>b</prediction></think><answer>Up || Down</answer>",
		"<answer>||||</answer>", "<think><think></answer><answer>", "", "<observation><prediction></observation></prediction>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var joined strings.Builder
		for _, sp := range StateSpans(s) {
			joined.WriteString(sp.Text)
		}
		if joined.String() != s {
			t.Fatalf("spans join to %q", joined.String())
		}
		r := Parse(s)
		if r.Wellformed(true) && !r.Wellformed(false) {
			t.Fatal("a world-model turn that is not a base turn")
		}
		if r.Wellformed(false) && len(r.Actions) == 0 {
			t.Fatal("well-formed without an action")
		}
		for _, a := range r.Actions {
			if a == "" || strings.Contains(a, ActionSeparator) {
				t.Fatalf("bad action %q", a)
			}
		}
		if len(r.Actions) > 0 && !strings.ContainsAny(strings.Join(r.Actions, ""), "<>") {
			back := Parse(Reply{Observation: "o", Prediction: "p", Actions: r.Actions}.Render(true))
			if !back.Wellformed(true) || strings.Join(back.Actions, "\x00") != strings.Join(r.Actions, "\x00") {
				t.Fatalf("actions %q rendered and parsed back as %q", r.Actions, back.Actions)
			}
		}
	})
}
