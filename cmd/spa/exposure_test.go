package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestWarnExposed(t *testing.T) {
	cases := []struct {
		listen string
		authed bool
		warns  bool
	}{
		{"127.0.0.1:8000", false, false},
		{"localhost:8000", false, false},
		{"[::1]:8000", false, false},
		{"0.0.0.0:8000", false, true},
		{":8000", false, true},
		{"10.1.2.3:4222", false, true},
		{"0.0.0.0:8000", true, false},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		warnExposed(&buf, "spa serve", c.listen, c.authed, "Set server.api_key.")
		if got := strings.Contains(buf.String(), "warning:"); got != c.warns {
			t.Errorf("%s authed=%v: warned %v (%q)", c.listen, c.authed, got, buf.String())
		}
	}
}
