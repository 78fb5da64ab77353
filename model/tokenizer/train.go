package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"golang.org/x/text/unicode/norm"
)

// QwenPattern is the Qwen2/Qwen2.5/Qwen3 pre-tokenizer regex; trained tokenizers use it too, so
// text splits the same way for spa's tiny model as for Qwen.
const QwenPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// TrainOptions configure Train.
type TrainOptions struct {
	// VocabSize is the total number of ids: 256 byte tokens, the learned merges and the added
	// tokens. Training stops earlier when no pair occurs twice.
	VocabSize int
	// Added tokens get the ids after the vocabulary, in order; they never take part in merges.
	Added []AddedToken
}

// Train learns byte-level BPE merges from corpus (most frequent pair first, ties broken by the
// pair's text so the result is deterministic) and returns a tokenizer.json that Load reads and
// Hugging Face's tokenizers library reads too.
func Train(corpus []string, opts TrainOptions) ([]byte, error) {
	if opts.VocabSize < 256+len(opts.Added) {
		return nil, fmt.Errorf("train tokenizer: vocab size %d is below 256 bytes + %d added tokens", opts.VocabSize, len(opts.Added))
	}
	split, err := newSplitter(QwenPattern)
	if err != nil {
		return nil, err
	}
	var addedRe func(string) [][]int
	if len(opts.Added) > 0 {
		tmp := &Tokenizer{added: opts.Added}
		tmp.compileAdded()
		addedRe = func(s string) [][]int { return tmp.addedRe.FindAllStringIndex(s, -1) }
	}
	counts := map[string]int{}
	countText := func(s string) {
		for _, piece := range split.split(norm.NFC.String(s)) {
			counts[piece]++
		}
	}
	for _, text := range corpus {
		last := 0
		if addedRe != nil {
			for _, m := range addedRe(text) {
				countText(text[last:m[0]])
				last = m[1]
			}
		}
		countText(text[last:])
	}
	// Words as symbol sequences; symbols are ids into tokens.
	tokens := make([]string, 256)
	for b := range 256 {
		tokens[b] = string(byteToRune[b])
	}
	type word struct {
		syms  []int
		count int
	}
	words := make([]word, 0, len(counts))
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		syms := make([]int, len(k))
		for i := 0; i < len(k); i++ {
			syms[i] = int(k[i])
		}
		words = append(words, word{syms, counts[k]})
	}
	var merges [][2]string
	target := opts.VocabSize - len(opts.Added)
	for len(tokens) < target {
		pairs := map[[2]int]int{}
		for _, w := range words {
			for i := 0; i+1 < len(w.syms); i++ {
				pairs[[2]int{w.syms[i], w.syms[i+1]}] += w.count
			}
		}
		best, bestN := [2]int{}, 1
		for p, n := range pairs {
			if n > bestN || n == bestN && n > 1 && tokens[p[0]]+" "+tokens[p[1]] < tokens[best[0]]+" "+tokens[best[1]] {
				best, bestN = p, n
			}
		}
		if bestN < 2 {
			break
		}
		id := len(tokens)
		tokens = append(tokens, tokens[best[0]]+tokens[best[1]])
		merges = append(merges, [2]string{tokens[best[0]], tokens[best[1]]})
		for wi := range words {
			s := words[wi].syms
			out := s[:0]
			for i := 0; i < len(s); i++ {
				if i+1 < len(s) && s[i] == best[0] && s[i+1] == best[1] {
					out = append(out, id)
					i++
					continue
				}
				out = append(out, s[i])
			}
			words[wi].syms = out
		}
	}
	return tokenizerJSON(tokens, merges, opts.Added)
}

// tokenizerJSON writes the Hugging Face tokenizer.json layout of a Qwen-style byte-level BPE.
func tokenizerJSON(tokens []string, merges [][2]string, added []AddedToken) ([]byte, error) {
	vocab := make(map[string]int, len(tokens))
	for id, t := range tokens {
		vocab[t] = id
	}
	type addedJSON struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	var at []addedJSON
	for i, a := range added {
		at = append(at, addedJSON{ID: len(tokens) + i, Content: a.Content, Special: a.Special})
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
	doc := map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil, "added_tokens": at,
		"normalizer": map[string]any{"type": "NFC"},
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": QwenPattern}, "behavior": "Isolated", "invert": false},
			byteLevel,
		}},
		"post_processor": byteLevel,
		"decoder":        byteLevel,
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "", "end_of_word_suffix": "",
			"fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges,
		},
	}
	return marshalJSON(doc)
}

// marshalJSON indents and keeps <, > and & as they are (tokens are full of them).
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
