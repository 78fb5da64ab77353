package tokenizer

import (
	"encoding/json"
	"fmt"

	"github.com/dlclark/regexp2"
)

// gpt2Pattern is the ByteLevel pre-tokenizer's own regex, used when it has use_regex set.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// splitter cuts text into pieces with a regex, keeping both the matches and the text between
// them (Hugging Face's "Isolated" behaviour). The patterns use lookahead, which Go's regexp lacks;
// regexp2's default (.NET) syntax has it, and its \s is Unicode White_Space as in Hugging Face.
type splitter struct {
	re *regexp2.Regexp
	// qwen is set when the pattern is QwenPattern, which qwenSplit implements without regexp2.
	qwen bool
}

func newSplitter(pattern string) (*splitter, error) {
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("pre-tokenizer regex: %w", err)
	}
	return &splitter{re: re, qwen: pattern == QwenPattern}, nil
}

func (s *splitter) split(text string) []string {
	if s.qwen {
		return qwenSplit([]rune(text))
	}
	return s.splitRegexp(text)
}

// splitRegexp splits with the regex itself (any pattern; the reference for qwenSplit).
func (s *splitter) splitRegexp(text string) []string {
	runes := []rune(text)
	var pieces []string
	last := 0
	m, err := s.re.FindRunesMatch(runes)
	for err == nil && m != nil {
		if m.Index > last {
			pieces = append(pieces, string(runes[last:m.Index]))
		}
		if m.Length > 0 {
			pieces = append(pieces, string(runes[m.Index:m.Index+m.Length]))
		}
		last = m.Index + m.Length
		m, err = s.re.FindNextMatch(m)
	}
	if last < len(runes) {
		pieces = append(pieces, string(runes[last:]))
	}
	return pieces
}

type preTokenizer struct {
	Type           string          `json:"type"`
	Pretokenizers  []preTokenizer  `json:"pretokenizers"`
	Pattern        json.RawMessage `json:"pattern"`
	Behavior       string          `json:"behavior"`
	Invert         bool            `json:"invert"`
	AddPrefixSpace bool            `json:"add_prefix_space"`
	UseRegex       bool            `json:"use_regex"`
}

// parsePreTokenizer accepts a ByteLevel pre-tokenizer, alone or after one regex Split.
func parsePreTokenizer(raw json.RawMessage) (*splitter, error) {
	var p preTokenizer
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	steps := []preTokenizer{p}
	if p.Type == "Sequence" {
		steps = p.Pretokenizers
	}
	var pattern string
	sawByteLevel := false
	for _, st := range steps {
		switch {
		case st.Type == "ByteLevel" && !sawByteLevel:
			if st.AddPrefixSpace {
				return nil, fmt.Errorf("pre_tokenizer ByteLevel with add_prefix_space is not supported")
			}
			if st.UseRegex {
				if pattern != "" {
					return nil, fmt.Errorf("pre_tokenizer: a Split followed by ByteLevel with use_regex is not supported")
				}
				pattern = gpt2Pattern
			}
			sawByteLevel = true
		case st.Type == "Split" && !sawByteLevel && pattern == "":
			var pat struct {
				Regex *string `json:"Regex"`
			}
			if err := json.Unmarshal(st.Pattern, &pat); err != nil || pat.Regex == nil {
				return nil, fmt.Errorf("pre_tokenizer Split: only {\"Regex\": ...} patterns are supported, got %s", st.Pattern)
			}
			if st.Behavior != "Isolated" || st.Invert {
				return nil, fmt.Errorf("pre_tokenizer Split: behavior %q invert %v is not supported (only Isolated)", st.Behavior, st.Invert)
			}
			pattern = *pat.Regex
		default:
			return nil, fmt.Errorf("pre_tokenizer %q in this position is not supported (want an optional regex Split, then ByteLevel)", st.Type)
		}
	}
	if !sawByteLevel {
		return nil, fmt.Errorf("pre_tokenizer has no ByteLevel step; only byte-level BPE is supported")
	}
	if pattern == "" {
		return nil, nil
	}
	return newSplitter(pattern)
}
