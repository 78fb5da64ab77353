package tokenizer

import "unicode"

// qwenSplit is the Qwen pre-tokenizer regex (QwenPattern) written out by hand. regexp2
// backtracks through seven alternatives at every position, which made tokenization two thirds of
// a rollout turn's cost; this scanner gives the same pieces (checked against regexp2 by a fuzz
// test) in one pass. It works on runes, as regexp2 does. At each position the alternatives are
// tried in the regex's order:
//
//	1 (?i:'s|'t|'re|'ve|'m|'ll|'d)
//	2 [^\r\n\p{L}\p{N}]?\p{L}+
//	3 \p{N}
//	4  ?[^\s\p{L}\p{N}]+[\r\n]*
//	5 \s*[\r\n]+
//	6 \s+(?!\S)
//	7 \s+
func qwenSplit(r []rune) []string {
	var pieces []string
	for i := 0; i < len(r); {
		n := qwenMatch(r, i)
		pieces = append(pieces, string(r[i:i+n]))
		i += n
	}
	return pieces
}

// isSpace is .NET's \s: [\f\n\r\t\v\x85\p{Z}], which is Unicode White_Space.
func isSpace(c rune) bool {
	switch c {
	case '\f', '\n', '\r', '\t', '\v', 0x85:
		return true
	}
	return unicode.In(c, unicode.Z)
}

func isLetter(c rune) bool { return unicode.IsLetter(c) }
func isNumber(c rune) bool { return unicode.IsNumber(c) }
func isOther(c rune) bool  { return !isSpace(c) && !isLetter(c) && !isNumber(c) }
func isNL(c rune) bool     { return c == '\r' || c == '\n' }

// qwenMatch returns the length of the match at i (always at least 1).
func qwenMatch(r []rune, i int) int {
	c := r[i]
	at := func(k int) rune {
		if k < len(r) {
			return r[k]
		}
		return -1
	}
	// 1: contractions, case-insensitive.
	if c == '\'' {
		lower := func(x rune) rune {
			if x >= 'A' && x <= 'Z' {
				return x + 'a' - 'A'
			}
			return x
		}
		a, b := lower(at(i+1)), lower(at(i+2))
		switch {
		case a == 's' || a == 't' || a == 'm' || a == 'd':
			return 2
		case a == 'r' && b == 'e', a == 'v' && b == 'e', a == 'l' && b == 'l':
			return 3
		}
	}
	letters := func(k int) int { // length of the letter run at k
		n := 0
		for k+n < len(r) && isLetter(r[k+n]) {
			n++
		}
		return n
	}
	// 2: an optional non-letter, non-number, non-newline, then letters.
	if !isNL(c) && !isLetter(c) && !isNumber(c) {
		if n := letters(i + 1); n > 0 {
			return 1 + n
		}
	}
	if isLetter(c) {
		return letters(i)
	}
	// 3: one number.
	if isNumber(c) {
		return 1
	}
	// 4: an optional space, a run of "other" characters, then any newlines.
	others := func(k int) int {
		n := 0
		for k+n < len(r) && isOther(r[k+n]) {
			n++
		}
		for k+n < len(r) && isNL(r[k+n]) {
			n++
		}
		return n
	}
	if c == ' ' && at(i+1) >= 0 && isOther(at(i+1)) {
		return 1 + others(i+1)
	}
	if isOther(c) {
		return others(i)
	}
	// c is whitespace. The whitespace run from i:
	w := 0
	for i+w < len(r) && isSpace(r[i+w]) {
		w++
	}
	// 5: whitespace up to and including its last newline.
	for k := w - 1; k >= 0; k-- {
		if isNL(r[i+k]) {
			return k + 1
		}
	}
	// 6: whitespace not followed by a non-space: all of it at the end of the text, else all but
	// the last character (which then starts the next piece, e.g. " hello").
	if i+w == len(r) {
		return w
	}
	if w >= 2 {
		return w - 1
	}
	// 7
	return w
}
