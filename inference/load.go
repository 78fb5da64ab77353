package inference

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/internal/safefile"
	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/tokenizer"
)

// Server is an engine with the HTTP API over it, as spa serve runs them. It is an http.Handler.
type Server struct {
	*api.Server
	engine *Engine
}

// Open starts an engine serving the checkpoint in dir as version 0 ("<name>-v0", also answering
// to name), with the checkpoint's tokenizer, chat template and end-of-sequence ids.
func Open(ctx context.Context, dir string, eopts Options, sopts api.Options) (*Server, error) {
	tokPath := filepath.Join(dir, "tokenizer.json")
	tokJSON, err := api.ReadTokenizerJSON(tokPath)
	if err != nil {
		return nil, fmt.Errorf("serve %s: tokenizer: %w", dir, err)
	}
	tok, err := tokenizer.Parse(tokJSON)
	if err != nil {
		return nil, fmt.Errorf("serve %s: tokenizer %s: %w", dir, tokPath, err)
	}
	tmpl, err := chat.Load(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", dir, err)
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	e := New(eopts)
	if err := e.LoadVersion(ctx, fmt.Sprintf("%s-v0", e.Name()), 0, dir); err != nil {
		e.Close()
		return nil, err
	}
	s, err := api.New(e, api.Model{Tokenizer: tok, Template: tmpl, EOS: endOfSequence(dir, cfg, tok), TokenizerJSON: tokJSON}, sopts)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("serve %s: %w", dir, err)
	}
	return &Server{Server: s, engine: e}, nil
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
	if data, err := safefile.Read(filepath.Join(dir, "generation_config.json"), 1<<20); err == nil {
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
