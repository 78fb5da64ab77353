package choice

import (
	"strings"
	"testing"
)

type color string

func TestParse(t *testing.T) {
	for s, want := range map[string]color{"": "red", "red": "red", "blue": "blue"} {
		if got, err := Parse("color", s, color("red"), "red", "blue"); err != nil || got != want {
			t.Errorf("%q: %q, %v", s, got, err)
		}
	}
	if _, err := Parse("color", "green", color("red"), "red", "blue"); err == nil || !strings.Contains(err.Error(), `unknown color "green" (want red, blue)`) {
		t.Errorf("unknown choice: %v", err)
	}
}
