// Package tokenizer reads Hugging Face tokenizer.json files of the byte-level BPE family (Qwen2,
// Qwen2.5, Qwen3, GPT-2 style) and encodes and decodes exactly as the Hugging Face tokenizers
// library does for them. It has no libtorch dependency, so rollout workers use it directly.
package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/spa-rl/spa/internal/safefile"
)

// AddedToken is a token matched as a whole in the raw text before any other processing.
type AddedToken struct {
	ID      int    `json:"id"`
	Content string `json:"content"`
	// Special tokens are dropped by Decode when skipSpecial is set.
	Special bool `json:"special"`
}

// Tokenizer encodes text to ids and back. It is safe for concurrent use.
type Tokenizer struct {
	vocab   map[string]int
	tokens  []string // id -> token, "" for unused ids
	merges  map[pair]merge
	nfc     bool
	split   *splitter // nil: the whole segment is one piece
	added   []AddedToken
	addedRe *regexp.Regexp // nil when there are no added tokens
	byID    map[int]AddedToken
	// maxBytes is the most bytes of text one token stands for.
	maxBytes int

	cacheMu sync.RWMutex
	cache   map[string][]int
}

type pair struct{ a, b int }

type merge struct{ rank, id int }

// file is the part of tokenizer.json this package reads.
type file struct {
	AddedTokens []struct {
		AddedToken
		LStrip     bool `json:"lstrip"`
		RStrip     bool `json:"rstrip"`
		SingleWord bool `json:"single_word"`
		Normalized bool `json:"normalized"`
	} `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        struct {
		Type                    string            `json:"type"`
		Vocab                   map[string]int    `json:"vocab"`
		Merges                  []json.RawMessage `json:"merges"`
		ByteFallback            bool              `json:"byte_fallback"`
		ContinuingSubwordPrefix string            `json:"continuing_subword_prefix"`
		EndOfWordSuffix         string            `json:"end_of_word_suffix"`
	} `json:"model"`
}

// Load reads a tokenizer.json file.
func Load(path string) (*Tokenizer, error) {
	data, err := safefile.Read(path, 256<<20)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return t, nil
}

// Parse reads tokenizer.json content. Anything outside the byte-level BPE family is refused with
// an error that names it, rather than encoded differently from Hugging Face.
func Parse(data []byte) (*Tokenizer, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if f.Model.Type != "BPE" {
		return nil, fmt.Errorf("model type %q is not supported (only byte-level BPE)", f.Model.Type)
	}
	if f.Model.ByteFallback || f.Model.ContinuingSubwordPrefix != "" || f.Model.EndOfWordSuffix != "" {
		return nil, errors.New("BPE options byte_fallback, continuing_subword_prefix and end_of_word_suffix are not supported")
	}
	t := &Tokenizer{vocab: f.Model.Vocab, merges: make(map[pair]merge, len(f.Model.Merges)), byID: map[int]AddedToken{}, cache: map[string][]int{}}
	size := 0
	for _, id := range t.vocab {
		size = max(size, id+1)
	}
	for _, a := range f.AddedTokens {
		size = max(size, a.ID+1)
	}
	t.tokens = make([]string, size)
	for tok, id := range t.vocab {
		if id < 0 {
			return nil, fmt.Errorf("token %q has negative id %d", tok, id)
		}
		t.tokens[id] = tok
		// Byte-level tokens spell each byte as one rune.
		t.maxBytes = max(t.maxBytes, utf8.RuneCountInString(tok))
	}
	for i, raw := range f.Model.Merges {
		a, b, err := parseMerge(raw)
		if err != nil {
			return nil, fmt.Errorf("merge %d: %w", i, err)
		}
		ia, oka := t.vocab[a]
		ib, okb := t.vocab[b]
		im, okm := t.vocab[a+b]
		if !oka || !okb || !okm {
			return nil, fmt.Errorf("merge %d (%q %q) uses tokens missing from the vocabulary", i, a, b)
		}
		if _, dup := t.merges[pair{ia, ib}]; !dup {
			t.merges[pair{ia, ib}] = merge{rank: i, id: im}
		}
	}
	for _, a := range f.AddedTokens {
		if a.LStrip || a.RStrip || a.SingleWord || a.Normalized {
			return nil, fmt.Errorf("added token %q: lstrip, rstrip, single_word and normalized are not supported", a.Content)
		}
		t.added = append(t.added, a.AddedToken)
		t.maxBytes = max(t.maxBytes, len(a.Content))
		t.byID[a.ID] = a.AddedToken
		if t.tokens[a.ID] == "" {
			t.tokens[a.ID] = a.Content
		}
	}
	t.compileAdded()
	var err error
	if t.nfc, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if t.split, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if err := checkDecoder(f.Decoder); err != nil {
		return nil, err
	}
	for b := range 256 {
		if _, ok := t.vocab[string(byteToRune[b])]; !ok {
			return nil, fmt.Errorf("the vocabulary lacks byte-level token %q (byte %d), so some text could not be encoded", string(byteToRune[b]), b)
		}
	}
	return t, nil
}

// compileAdded builds the matcher for added tokens, longest first, so that a token that is a
// prefix of another never wins.
func (t *Tokenizer) compileAdded() {
	if len(t.added) == 0 {
		return
	}
	sorted := append([]AddedToken(nil), t.added...)
	sort.SliceStable(sorted, func(i, j int) bool { return len(sorted[i].Content) > len(sorted[j].Content) })
	alts := make([]string, len(sorted))
	for i, a := range sorted {
		alts[i] = regexp.QuoteMeta(a.Content)
	}
	t.addedRe = regexp.MustCompile(strings.Join(alts, "|"))
}

// parseMerge accepts both forms of a merge: "a b" and ["a","b"].
func parseMerge(raw json.RawMessage) (string, string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		a, b, ok := strings.Cut(s, " ")
		if !ok {
			return "", "", fmt.Errorf("%q is not two tokens", s)
		}
		return a, b, nil
	}
	var p []string
	if err := json.Unmarshal(raw, &p); err != nil || len(p) != 2 {
		return "", "", fmt.Errorf("%s is neither \"a b\" nor [\"a\",\"b\"]", raw)
	}
	return p[0], p[1], nil
}

func parseNormalizer(raw json.RawMessage) (bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return false, nil
	}
	var n struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return false, fmt.Errorf("normalizer: %w", err)
	}
	if n.Type != "NFC" {
		return false, fmt.Errorf("normalizer %q is not supported (only NFC or none)", n.Type)
	}
	return true, nil
}

func checkDecoder(raw json.RawMessage) error {
	var d struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("decoder: %w", err)
	}
	if d.Type != "ByteLevel" {
		return fmt.Errorf("decoder %q is not supported (only ByteLevel)", d.Type)
	}
	return nil
}

// MaxTokenBytes is the most bytes of (normalised) text that one token stands for, so text of n
// bytes encodes to at least n / MaxTokenBytes tokens: a bound a server can check before paying
// for encoding a huge prompt.
func (t *Tokenizer) MaxTokenBytes() int { return max(t.maxBytes, 1) }

// VocabSize is one more than the largest id, added tokens included.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// ID returns the id of a token (vocabulary or added), and whether it exists.
func (t *Tokenizer) ID(token string) (int, bool) {
	for _, a := range t.added {
		if a.Content == token {
			return a.ID, true
		}
	}
	id, ok := t.vocab[token]
	return id, ok
}

// Token returns the token string of id ("" when out of range or unused).
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// Added lists the added tokens.
func (t *Tokenizer) Added() []AddedToken { return append([]AddedToken(nil), t.added...) }

// Encode turns text into ids: added tokens are matched first and become single ids, the rest is
// normalised, split by the pre-tokenizer and byte-level BPE encoded. No BOS or EOS is added.
func (t *Tokenizer) Encode(text string) []int {
	var ids []int
	if t.addedRe == nil {
		return t.encodeSegment(ids, text)
	}
	last := 0
	for _, m := range t.addedRe.FindAllStringIndex(text, -1) {
		ids = t.encodeSegment(ids, text[last:m[0]])
		id, _ := t.ID(text[m[0]:m[1]])
		ids = append(ids, id)
		last = m[1]
	}
	return t.encodeSegment(ids, text[last:])
}

func (t *Tokenizer) encodeSegment(ids []int, s string) []int {
	if s == "" {
		return ids
	}
	if t.nfc {
		s = norm.NFC.String(s)
	}
	if t.split == nil {
		return t.encodeWord(ids, s)
	}
	for _, piece := range t.split.split(s) {
		ids = t.encodeWord(ids, piece)
	}
	return ids
}

const cacheLimit = 1 << 16

// encodeWord appends the BPE ids of one pre-tokenized piece.
func (t *Tokenizer) encodeWord(ids []int, word string) []int {
	t.cacheMu.RLock()
	cached, ok := t.cache[word]
	t.cacheMu.RUnlock()
	if ok {
		return append(ids, cached...)
	}
	out := t.bpe(word)
	t.cacheMu.Lock()
	if len(t.cache) >= cacheLimit {
		clear(t.cache) // a crude bound; real text repeats its words within a batch
	}
	t.cache[word] = out
	t.cacheMu.Unlock()
	return append(ids, out...)
}

// bpe merges the byte-level symbols of word, lowest merge rank first, as Hugging Face does.
func (t *Tokenizer) bpe(word string) []int {
	syms := make([]int, 0, len(word))
	for i := 0; i < len(word); i++ {
		syms = append(syms, t.vocab[string(byteToRune[word[i]])])
	}
	for len(syms) > 1 {
		best, at := merge{rank: -1}, -1
		for i := 0; i+1 < len(syms); i++ {
			if m, ok := t.merges[pair{syms[i], syms[i+1]}]; ok && (best.rank < 0 || m.rank < best.rank) {
				best, at = m, i
			}
		}
		if at < 0 {
			break
		}
		// Merge every occurrence of the best pair, left to right, in one pass.
		a, b := syms[at], syms[at+1]
		out := syms[:0]
		for i := 0; i < len(syms); i++ {
			if i+1 < len(syms) && syms[i] == a && syms[i+1] == b {
				out = append(out, best.id)
				i++
				continue
			}
			out = append(out, syms[i])
		}
		syms = out
	}
	return append([]int(nil), syms...)
}

// Decode turns ids back into text. Added tokens decode to their content (special ones are
// dropped with skipSpecial); byte sequences that are not valid UTF-8 become U+FFFD, as Hugging
// Face's byte-level decoder does. Unknown ids are an error.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) (string, error) {
	var sb strings.Builder
	var pending []byte
	flush := func() {
		sb.WriteString(lossyUTF8(pending))
		pending = pending[:0]
	}
	for _, id := range ids {
		if a, ok := t.byID[id]; ok {
			if a.Special && skipSpecial {
				continue
			}
			flush()
			sb.WriteString(a.Content)
			continue
		}
		tok := t.Token(id)
		if tok == "" {
			return "", fmt.Errorf("decode: unknown token id %d (vocabulary size %d)", id, len(t.tokens))
		}
		for _, r := range tok {
			b, ok := runeToByte[r]
			if !ok {
				return "", fmt.Errorf("decode: token %d (%q) is not byte-level", id, tok)
			}
			pending = append(pending, b)
		}
	}
	flush()
	return sb.String(), nil
}

func nfc(s string) string { return norm.NFC.String(s) }
