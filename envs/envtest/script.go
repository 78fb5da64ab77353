// Package envtest runs data-driven environment tests: scripts in testdata files that start from a
// given state, apply actions, and state the expected outcome and rendering after each one.
//
// A script file holds cases:
//
//	=== name of the case
//	<initial state, in the environment's own notation, one or more lines>
//	--- coords
//	<expected coordinate rendering of the initial state>
//	> Action
//	reward -0.1 done false success false valid true
//	<expected raw rendering after the action>
//	> ...
//
// Lines starting with # outside a case are comments.
package envtest

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/spa-rl/spa/envs"
)

// Case is one script case.
type Case struct {
	Name    string
	Initial []string
	Coords  string
	Steps   []Step
	Line    int
}

// Step is one action and what it must produce.
type Step struct {
	Action string
	Want   envs.Step
	Render string
	Line   int
}

// Load parses a script file.
func Load(path string) ([]Case, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var cases []Case
	var cur *Case
	var section string // "initial", "coords", "outcome", "render"
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "=== "):
			cases = append(cases, Case{Name: strings.TrimPrefix(line, "=== "), Line: n})
			cur, section = &cases[len(cases)-1], "initial"
		case cur == nil:
			if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "#") {
				return nil, fmt.Errorf("%s:%d: text before the first case", path, n)
			}
		case line == "--- coords":
			section = "coords"
		case strings.HasPrefix(line, "> "):
			cur.Steps = append(cur.Steps, Step{Action: strings.TrimPrefix(line, "> "), Line: n})
			section = "outcome"
		case section == "outcome":
			st, err := parseOutcome(line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			cur.Steps[len(cur.Steps)-1].Want = st
			section = "render"
		case section == "initial":
			if line != "" {
				cur.Initial = append(cur.Initial, line)
			}
		case section == "coords":
			if line != "" {
				cur.Coords = join(cur.Coords, line)
			}
		case section == "render":
			if line != "" {
				s := &cur.Steps[len(cur.Steps)-1]
				s.Render = join(s.Render, line)
			}
		}
	}
	return cases, sc.Err()
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "\n" + b
}

func parseOutcome(line string) (envs.Step, error) {
	f := strings.Fields(line)
	if len(f) != 8 || f[0] != "reward" || f[2] != "done" || f[4] != "success" || f[6] != "valid" {
		return envs.Step{}, fmt.Errorf("want `reward R done B success B valid B`, got %q", line)
	}
	var st envs.Step
	var err error
	if st.Reward, err = strconv.ParseFloat(f[1], 64); err != nil {
		return st, err
	}
	for i, dst := range []*bool{&st.Done, &st.Success, &st.Valid} {
		if *dst, err = strconv.ParseBool(f[3+2*i]); err != nil {
			return st, err
		}
	}
	return st, nil
}

// Run loads path and plays every case on the environment that start builds from the initial
// state, checking each outcome and rendering.
func Run(t *testing.T, path string, start func(initial []string) (envs.Env, error)) {
	t.Helper()
	cases, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s: no cases", path)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			env, err := start(c.Initial)
			if err != nil {
				t.Fatalf("%s:%d: %v", path, c.Line, err)
			}
			if c.Coords != "" {
				if got := env.Render(envs.Coords); got != c.Coords {
					t.Errorf("%s:%d: initial coords rendering:\n got:\n%s\nwant:\n%s", path, c.Line, got, c.Coords)
				}
			}
			for _, s := range c.Steps {
				got, err := env.Step(s.Action)
				if err != nil {
					t.Fatalf("%s:%d: step %q: %v", path, s.Line, s.Action, err)
				}
				if got != s.Want {
					t.Errorf("%s:%d: step %q = %+v, want %+v", path, s.Line, s.Action, got, s.Want)
				}
				if r := env.Render(envs.Raw); s.Render != "" && r != s.Render {
					t.Errorf("%s:%d: after %q:\n got:\n%s\nwant:\n%s", path, s.Line, s.Action, r, s.Render)
				}
			}
		})
	}
}

// Play applies actions and returns the renderings after each, for determinism checks.
func Play(env envs.Env, seed int64, actions []string) (string, error) {
	if err := env.Reset(seed); err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.WriteString(env.Render(envs.Coords))
	for _, a := range actions {
		st, err := env.Step(a)
		if err != nil {
			break
		}
		fmt.Fprintf(&sb, "\n%s %+v\n%s", a, st, env.Render(envs.Coords))
		if st.Done {
			break
		}
	}
	return sb.String(), nil
}
