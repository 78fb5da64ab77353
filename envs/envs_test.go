package envs_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/spa-rl/spa/envs"
	_ "github.com/spa-rl/spa/envs/builtin"
)

func TestRegistry(t *testing.T) {
	if got := strings.Join(envs.Names(), ","); got != "frozenlake,sokoban,sudoku" {
		t.Errorf("Names = %s", got)
	}
	for _, tc := range []struct{ name, variant, wantVariant, wantErr string }{
		{"sokoban", "", "6x6-1box", ""},
		{"SOKOBAN", "10x10-2box", "10x10-2box", ""},
		{"frozenlake", "", "4x4", ""},
		{"sudoku", "9x9", "9x9", ""},
		{"chess", "", "", `unknown environment "chess" (known: frozenlake, sokoban, sudoku)`},
		{"sudoku", "5x5", "", `sudoku variant "5x5"`},
	} {
		env, err := envs.New(tc.name, tc.variant)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New(%q, %q) err = %v, want %q", tc.name, tc.variant, err, tc.wantErr)
			}
			continue
		}
		if err != nil || env.Spec().Variant != tc.wantVariant {
			t.Errorf("New(%q, %q) = %v, %v", tc.name, tc.variant, env, err)
		}
	}
}

func TestSpecsAreComplete(t *testing.T) {
	for _, info := range envs.List() {
		for _, v := range info.Variants {
			env, err := envs.New(info.Name, v.Name)
			if err != nil {
				t.Fatal(err)
			}
			s := env.Spec()
			if s.Name != info.Name || s.Instructions == "" || s.WorldModelInstructions == "" || s.Legend == "" ||
				len(s.Actions) == 0 || s.MaxActions <= 0 || len(s.RenderModes) != 2 {
				t.Errorf("%s %s: incomplete spec %+v", info.Name, v.Name, s)
			}
		}
	}
}

func TestParseRenderMode(t *testing.T) {
	for in, want := range map[string]envs.RenderMode{"raw": envs.Raw, " Coords ": envs.Coords} {
		if got, err := envs.ParseRenderMode(in); err != nil || got != want {
			t.Errorf("ParseRenderMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := envs.ParseRenderMode("ascii"); err == nil {
		t.Error("ParseRenderMode accepted ascii")
	}
}

// Random actions are well-formed for every environment: a random explorer never wastes a turn on
// an action the environment cannot read.
func TestRandomActionsAreValid(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, info := range envs.List() {
		env, _ := envs.New(info.Name, "")
		valid, total := 0, 0
		for seed := int64(0); seed < 50; seed++ {
			if err := env.Reset(seed); err != nil {
				t.Fatal(err)
			}
			for {
				st, err := env.Step(envs.RandomAction(env, rng))
				if err != nil {
					t.Fatal(err)
				}
				total++
				if st.Valid {
					valid++
				}
				if st.Done || total > 10000 {
					break
				}
			}
		}
		if valid != total {
			t.Errorf("%s: %d of %d random actions invalid", info.Name, total-valid, total)
		}
	}
}

func TestMeasure(t *testing.T) {
	r, err := envs.Measure("sokoban", "", 10*time.Millisecond)
	if err != nil || r.Resets == 0 || r.Steps == 0 || r.ResetsPerSec <= 0 || r.StepsPerSec <= 0 {
		t.Errorf("Measure = %+v, %v", r, err)
	}
	if _, err := envs.Measure("nope", "", time.Millisecond); err == nil {
		t.Error("Measure of an unknown env succeeded")
	}
}

// closingEnv counts Close calls.
type closingEnv struct {
	envs.Env
	closed int
}

func (c *closingEnv) Close() error { c.closed++; return nil }

// TestCloseClosesOnlyClosers: envs.Close reaches an Env's Close when it has one, and is a no-op
// otherwise.
func TestCloseClosesOnlyClosers(t *testing.T) {
	c := &closingEnv{}
	if err := envs.Close(c); err != nil || c.closed != 1 {
		t.Errorf("closer: %v, closed %d times", err, c.closed)
	}
	var plain struct{ envs.Env }
	if err := envs.Close(plain); err != nil {
		t.Errorf("an Env without Close: %v", err)
	}
}
