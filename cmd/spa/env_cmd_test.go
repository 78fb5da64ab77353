package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// spaIn runs the CLI with stdin.
func spaIn(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		stderr.WriteString(err.Error())
		return 1, stdout.String(), stderr.String()
	}
	return 0, stdout.String(), stderr.String()
}

func TestEnvList(t *testing.T) {
	code, out, _ := spa(t, "env", "list")
	for _, want := range []string{"sokoban", "6x6-1box (default)", "10x10-2box", "frozenlake", "sudoku", "9x9"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("env list lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	code, out, _ = spa(t, "env", "list", "--json")
	var infos []struct{ Name string }
	if code != 0 || json.Unmarshal([]byte(out), &infos) != nil || len(infos) != 3 {
		t.Errorf("env list --json: exit %d, %q", code, out)
	}
}

// The JSON protocol of `spa env play`: a start object, then one object per action until done.
func TestEnvPlayJSON(t *testing.T) {
	// Sudoku 4x4 seed 11 played with its own solution from a first pass.
	code, out, errOut := spaIn(t, "", "env", "play", "sudoku", "--seed", "11", "--json", "--coords")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var start struct {
		Observation string
		Seed        int64
		Env         string
	}
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &start); err != nil || start.Seed != 11 || start.Env != "sudoku" {
		t.Fatalf("start line: %v %+v", err, start)
	}
	if !strings.Contains(start.Observation, "Empty positions to be filled are at") {
		t.Errorf("--coords not applied: %q", start.Observation)
	}

	code, out, errOut = spaIn(t, "garbage\n\n9,9,9\n", "env", "play", "sokoban", "--seed", "5", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a start line and two action lines (blank input skipped), got:\n%s", out)
	}
	for _, l := range lines[1:] {
		var step struct {
			Action string
			Valid  bool
			Reward float64
			Done   bool
		}
		if err := json.Unmarshal([]byte(l), &step); err != nil || step.Valid || step.Reward != 0 || step.Done {
			t.Errorf("invalid action line: %v %s", err, l)
		}
	}
}

// Ten valid moves use up any Sokoban episode's budget; play must stop there, not read on.
func TestEnvPlayStopsAtEpisodeEnd(t *testing.T) {
	moves := strings.Repeat("up\n", 12)
	code, out, errOut := spaIn(t, moves, "env", "play", "sokoban", "--seed", "2", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, `"done":true`) || len(lines) > 11 {
		t.Errorf("play did not stop at the end of the episode (%d lines), last: %s", len(lines), last)
	}
}

func TestEnvPlayInteractive(t *testing.T) {
	code, out, errOut := spaIn(t, "fly\nup\n", "env", "play", "frozenlake", "--seed", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"frozenlake 4x4, seed 1", "Symbols: P You", "action> ", `invalid action "fly"`, "reward 0.0 (total 0.0, 1/10 actions)"} {
		if !strings.Contains(out, want) {
			t.Errorf("interactive output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "end of input") && !strings.Contains(out, "game over") && !strings.Contains(out, "solved") {
		t.Errorf("no closing line:\n%s", out)
	}
}

func TestEnvPlayErrors(t *testing.T) {
	for _, args := range [][]string{
		{"env", "play", "chess"},
		{"env", "play", "sokoban", "--variant", "3x3"},
		{"env", "play"},
	} {
		if code, _, errOut := spaIn(t, "", args...); code == 0 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

func TestBenchEnvsJSON(t *testing.T) {
	code, out, errOut := spa(t, "bench", "envs", "--json", "--duration", "20ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var report struct {
		Machine struct{ Cores int }
		Results []struct {
			Env          string
			ResetsPerSec float64 `json:"resets_per_sec"`
			StepsPerSec  float64 `json:"steps_per_sec"`
		}
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatal(err)
	}
	if len(report.Results) != 6 || report.Machine.Cores < 1 {
		t.Fatalf("report: %+v", report)
	}
	for _, r := range report.Results {
		if r.ResetsPerSec <= 0 || r.StepsPerSec <= 0 {
			t.Errorf("%s: no rate measured: %+v", r.Env, r)
		}
	}
}
