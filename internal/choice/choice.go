// Package choice parses the named options of typed string enums (advantage estimators, loss
// aggregations, exploration modes), with one error shape that lists what is accepted.
package choice

import (
	"fmt"
	"slices"
	"strings"
)

// Parse returns s as one of choices, or def when s is empty; anything else is an error that
// names what and lists the choices.
func Parse[T ~string](what, s string, def T, choices ...T) (T, error) {
	if s == "" {
		return def, nil
	}
	if slices.Contains(choices, T(s)) {
		return T(s), nil
	}
	names := make([]string, len(choices))
	for i, c := range choices {
		names[i] = string(c)
	}
	return "", fmt.Errorf("unknown %s %q (want %s)", what, s, strings.Join(names, ", "))
}
