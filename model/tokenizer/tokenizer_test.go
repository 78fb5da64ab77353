package tokenizer

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

const qwen3Dir = "../../../shared/testdata/tokenizer/qwen3"

var (
	qwenOnce sync.Once
	qwenTok  *Tokenizer
	qwenErr  error
)

// qwen3 loads the shared Qwen3 tokenizer once, or skips when the shared fixtures are absent.
func qwen3(t testing.TB) *Tokenizer {
	t.Helper()
	path := filepath.Join(qwen3Dir, "tokenizer.json")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("shared tokenizer fixtures not found at %s", qwen3Dir)
	}
	qwenOnce.Do(func() { qwenTok, qwenErr = Load(path) })
	if qwenErr != nil {
		t.Fatal(qwenErr)
	}
	return qwenTok
}

type refCase struct {
	Text      string `json:"text"`
	IDs       []int  `json:"ids"`
	Roundtrip bool   `json:"roundtrip"`
	Decoded   string `json:"decoded"`
}

func loadCases(t *testing.T) []refCase {
	f, err := os.Open(filepath.Join(qwen3Dir, "cases.jsonl"))
	if err != nil {
		t.Skipf("shared tokenizer cases: %v", err)
	}
	defer f.Close()
	var cases []refCase
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c refCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		if c.IDs == nil {
			c.IDs = []int{}
		}
		cases = append(cases, c)
	}
	return cases
}

// TestQwen3ReferenceCases requires every shared case: the exact ids, and the exact decoding.
func TestQwen3ReferenceCases(t *testing.T) {
	tok := qwen3(t)
	cases := loadCases(t)
	if len(cases) != 76 {
		t.Fatalf("%d cases, want 76", len(cases))
	}
	pass := 0
	for _, c := range cases {
		got := tok.Encode(c.Text)
		if got == nil {
			got = []int{}
		}
		ok := true
		if !reflect.DeepEqual(got, c.IDs) {
			t.Errorf("encode %q:\n got %v\nwant %v", c.Text, got, c.IDs)
			ok = false
		}
		want := c.Text
		if !c.Roundtrip {
			want = c.Decoded
		}
		back, err := tok.Decode(c.IDs, false)
		if err != nil || back != want {
			t.Errorf("decode %v: %q, %v; want %q", c.IDs, back, err, want)
			ok = false
		}
		if ok {
			pass++
		}
	}
	t.Logf("%d/%d reference cases pass", pass, len(cases))
	if pass != len(cases) {
		t.Fatalf("%d of %d reference cases fail", len(cases)-pass, len(cases))
	}
	// The fixture README gives Hugging Face's ids for the two characters its JavaScript
	// reference gets wrong: U+0085 is White_Space, U+FEFF is not.
	for text, want := range map[string][]int{"a \u0085b": {64, 220, 126, 227, 65}, "a \ufeffb": {64, 75780, 65}} {
		if got := tok.Encode(text); !reflect.DeepEqual(got, want) {
			t.Errorf("encode %q = %v, want Hugging Face's %v", text, got, want)
		}
	}
}

func TestQwen3Basics(t *testing.T) {
	tok := qwen3(t)
	if n := tok.VocabSize(); n != 151669 {
		t.Errorf("vocab size %d, want 151669", n)
	}
	for tokStr, want := range map[string]int{"<|im_start|>": 151644, "<|im_end|>": 151645, "<think>": 151667, "Ġ": 220} {
		if id, ok := tok.ID(tokStr); !ok || id != want {
			t.Errorf("ID(%q) = %d, %v; want %d", tokStr, id, ok, want)
		}
	}
	ids := tok.Encode("<|im_start|>user\nhi<|im_end|>")
	if ids[0] != 151644 || ids[len(ids)-1] != 151645 {
		t.Errorf("special tokens not single ids: %v", ids)
	}
	text, err := tok.Decode(ids, true)
	if err != nil || text != "user\nhi" {
		t.Errorf("skip special: %q, %v", text, err)
	}
	if _, err := tok.Decode([]int{1 << 30}, false); err == nil || !strings.Contains(err.Error(), "unknown token id") {
		t.Errorf("unknown id: %v", err)
	}
	// Half of a multi-byte character decodes to U+FFFD, as Hugging Face's lossy decoder does.
	euro := tok.Encode("€")
	if len(euro) > 1 {
		if s, _ := tok.Decode(euro[:1], false); s != "\uFFFD" {
			t.Errorf("partial character decodes to %q", s)
		}
	}
}

func TestLossyUTF8MatchesRust(t *testing.T) {
	// Expected values are what Rust's String::from_utf8_lossy gives (maximal subparts).
	for in, want := range map[string]string{
		"\xff\xfe":         "\uFFFD\uFFFD",
		"a\xe4\xb8":        "a\uFFFD",
		"\xe4\xb8\xe4\xb8": "\uFFFD\uFFFD",
		"\xed\xa0\x80":     "\uFFFD\uFFFD\uFFFD", // a surrogate: ED is followed only by 80..9F
		"\xf0\x9f\x98":     "\uFFFD",
		"\xc0\xaf":         "\uFFFD\uFFFD",
		"ok":               "ok",
	} {
		if got := lossyUTF8([]byte(in)); got != want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzQwen3RoundTrip(f *testing.F) {
	tok := qwen3(f)
	for _, s := range []string{"", "Hello world", "  \t\n\r\n x", "中文 😀 é", "<|im_start|>a<think>b", "'S 'll 123456", "\u00a0\u3000\u0085"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		ids := tok.Encode(s)
		back, err := tok.Decode(ids, false)
		if err != nil {
			t.Fatal(err)
		}
		// NFC may change the text; the round trip is exact for text already in NFC.
		if want := nfc(s); back != want {
			t.Fatalf("%q -> %v -> %q, want %q", s, ids, back, want)
		}
	})
}

func TestParseRefusesWhatItCannotMatch(t *testing.T) {
	base := func(mut func(m map[string]any)) []byte {
		m := map[string]any{
			"added_tokens":  []any{},
			"normalizer":    nil,
			"pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
			"decoder":       map[string]any{"type": "ByteLevel"},
			"model":         map[string]any{"type": "BPE", "vocab": byteVocab(), "merges": []any{}},
		}
		mut(m)
		b, _ := json.Marshal(m)
		return b
	}
	if _, err := Parse(base(func(map[string]any) {})); err != nil {
		t.Fatalf("minimal byte-level tokenizer: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(m map[string]any)
		want string
	}{
		"wordpiece":  {func(m map[string]any) { m["model"].(map[string]any)["type"] = "WordPiece" }, "WordPiece"},
		"normalizer": {func(m map[string]any) { m["normalizer"] = map[string]any{"type": "Lowercase"} }, "Lowercase"},
		"metaspace":  {func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "Metaspace"} }, "Metaspace"},
		"decoder":    {func(m map[string]any) { m["decoder"] = map[string]any{"type": "WordPiece"} }, "decoder"},
		"bad merge":  {func(m map[string]any) { m["model"].(map[string]any)["merges"] = []any{"x y"} }, "missing from the vocabulary"},
		"lstrip": {func(m map[string]any) {
			m["added_tokens"] = []any{map[string]any{"id": 300, "content": "<x>", "lstrip": true}}
		}, "lstrip"},
		"prefix": {func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true}
		}, "add_prefix_space"},
		"short vocab": {func(m map[string]any) { delete(m["model"].(map[string]any)["vocab"].(map[string]int), "Ā") }, "lacks byte-level token"},
	} {
		if _, err := Parse(base(tc.mut)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

func byteVocab() map[string]int {
	v := map[string]int{}
	for b := range 256 {
		v[string(byteToRune[b])] = b
	}
	return v
}

// FuzzQwenSplitMatchesRegexp checks the hand-written Qwen pre-tokenizer against regexp2 running
// the pattern itself.
func FuzzQwenSplitMatchesRegexp(f *testing.F) {
	sp, err := newSplitter(QwenPattern)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"Hello world", "  two  spaces \n\n x", "I'm here, they'LL see 'Re", "a\r\n\r\nb", "中文 é 😀 123 4.5", "\t\tdef f():\n    return 1\n", "$$$ !!\n\nx", " \u00a0\u3000 a\u0085b", "'x '' 's", "   "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := sp.splitRegexp(s)
		got := qwenSplit([]rune(s))
		if len(got) != len(want) {
			t.Fatalf("%q: %q, regexp2 %q", s, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%q: %q, regexp2 %q", s, got, want)
			}
		}
	})
}
