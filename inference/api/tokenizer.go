package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/spa-rl/spa/internal/safefile"
)

// ReadTokenizerJSON reads a tokenizer.json of any realistic size (Qwen's is 11 MB) as untrusted
// input: a regular file, bounded.
func ReadTokenizerJSON(path string) ([]byte, error) { return safefile.Read(path, 256<<20) }

// tokenizerDigest identifies a tokenizer.json by its content, independent of key order and
// whitespace, so that a re-saved copy matches the original.
func tokenizerDigest(data []byte) (string, error) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return "", err
	}
	canonical, err := json.Marshal(v) // map keys come out sorted
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:]), nil
}
