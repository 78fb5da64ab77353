package gen

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckVersion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		number int64
		bad    string // part of the error; empty when accepted
	}{
		{"spa-v3", 3, ""},
		{"Qwen/Qwen2.5-0.5B@lora:1+x", 0, ""},
		{strings.Repeat("a", 128), 1, ""},
		{strings.Repeat("a", 129), 1, "must be 1-128"},
		{"", 1, "must be 1-128"},
		{"-v1", 1, "starting with a letter or digit"},
		{"spa v1", 1, "must be 1-128"},
		{"../etc", 1, "must be 1-128"},
		{"spa", 1, "the served name"},
		{"spa-v1", -1, "negative"},
	} {
		err := CheckVersion("spa", tc.name, tc.number)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q %d: %v", tc.name, tc.number, err)
		case tc.bad != "" && (err == nil || !errors.Is(err, ErrBadVersion) || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q %d: got %v, want ErrBadVersion saying %q", tc.name, tc.number, err, tc.bad)
		}
	}
}
