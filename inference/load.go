package inference

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spa-rl/spa/internal/safefile"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/tokenizer"
)

// Open starts an engine serving the checkpoint in dir as version 0 ("<name>-v0", also answering
// to name), with the checkpoint's tokenizer, chat template and end-of-sequence ids.
func Open(ctx context.Context, dir string, eopts Options, sopts ServerOptions) (*Server, error) {
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", dir, err)
	}
	tmpl, err := chat.Load(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", dir, err)
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	eos := endOfSequence(dir, cfg, tok)
	e := New(eopts)
	if err := e.LoadVersion(ctx, fmt.Sprintf("%s-v0", e.Name()), 0, dir); err != nil {
		e.Close()
		return nil, err
	}
	s := NewServer(e, tok, tmpl, eos, sopts)
	data, err := readTokenizerJSON(filepath.Join(dir, "tokenizer.json"))
	if err == nil {
		s.tokRaw = sha256.Sum256(data)
		s.tokDigest, err = tokenizerDigest(data)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("serve %s: tokenizer.json: %w", dir, err)
	}
	return s, nil
}

// readTokenizerJSON reads a tokenizer.json of any realistic size (Qwen's is 11 MB).
func readTokenizerJSON(path string) ([]byte, error) { return safefile.Read(path, 256<<20) }

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

// Engine is the server's engine, for the in-process API.
func (s *Server) Engine() *Engine { return s.engine }

// Close stops the engine.
func (s *Server) Close() { s.engine.Close() }

// endOfSequence gathers the ids that end generation: config.json's and generation_config.json's
// eos_token_id, and the tokenizer's <|im_end|> and <|endoftext|> (ChatML's turn and text ends).
func endOfSequence(dir string, cfg model.Config, tok *tokenizer.Tokenizer) []int {
	seen := map[int]bool{}
	var out []int
	add := func(ids ...int) {
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	add(cfg.EOSTokenID...)
	if data, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil {
		var gc struct {
			EOS model.IDList `json:"eos_token_id"`
		}
		if json.Unmarshal(data, &gc) == nil {
			add(gc.EOS...)
		}
	}
	for _, t := range []string{"<|im_end|>", "<|endoftext|>"} {
		if id, ok := tok.ID(t); ok {
			add(id)
		}
	}
	return out
}
