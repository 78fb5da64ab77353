// Package api is spa's OpenAI-compatible HTTP API, as vLLM serves it: completions and chat with
// streaming, logprobs and vLLM's token-id extensions, models, metrics, and the admin endpoints
// that load weights and pause generation. It drives any gen.Generator and imports no libtorch, so
// its behaviour is tested against a fake generator; inference.Open serves it over the engine.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nuid"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/inference/wire"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/tokenizer"
)

// Options configure the HTTP layer.
type Options struct {
	// APIKey, when set, is required as "Authorization: Bearer KEY" on /v1 endpoints.
	APIKey string
	// AdminKey guards /update_weights, /pause and /resume; empty means APIKey.
	AdminKey string
	// MaxBodyBytes bounds request bodies; zero means 16 MiB.
	MaxBodyBytes int64
	// BodyTimeout bounds reading one request body, so a client that trickles bytes cannot hold a
	// connection; zero means 30 s. It does not bound the response: generations stream as long
	// as they need.
	BodyTimeout time.Duration
	// MaxRequestSeqs bounds the sequences one request asks for (prompts × n); zero means 256.
	MaxRequestSeqs int
	// WeightsRoot, when set, is the only directory tree /update_weights may load from, checked
	// after resolving symlinks; empty allows any directory the process can read.
	WeightsRoot string
}

// Model is what the API needs of the served checkpoint besides its weights.
type Model struct {
	// Tokenizer encodes prompts and decodes completions, for every version.
	Tokenizer *tokenizer.Tokenizer
	// Template renders chat messages.
	Template *chat.Template
	// EOS lists the ids that end a sequence unless a request sets ignore_eos.
	EOS []int
	// TokenizerJSON is the served tokenizer.json, which a weight update must match; nil accepts
	// any.
	TokenizerJSON []byte
}

// Server is the OpenAI-compatible HTTP API over a generator.
type Server struct {
	gen  gen.Generator
	tok  *tokenizer.Tokenizer
	tmpl *chat.Template
	eos  []int
	opts Options
	mux  *http.ServeMux
	// tokDigest identifies the served tokenizer.json by content, tokRaw by its bytes; a version
	// with another tokenizer is refused.
	tokDigest string
	tokRaw    [32]byte
}

// New serves g with the served checkpoint's tokenizer, template and end-of-sequence ids.
func New(g gen.Generator, m Model, opts Options) (*Server, error) {
	if m.Tokenizer == nil || m.Template == nil {
		return nil, errors.New("api: the model needs a tokenizer and a chat template")
	}
	if opts.AdminKey == "" {
		opts.AdminKey = opts.APIKey
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 16 << 20
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = 30 * time.Second
	}
	if opts.MaxRequestSeqs <= 0 {
		opts.MaxRequestSeqs = 256
	}
	s := &Server{gen: g, tok: m.Tokenizer, tmpl: m.Template, eos: m.EOS, opts: opts, mux: http.NewServeMux()}
	if m.TokenizerJSON != nil {
		digest, err := tokenizerDigest(m.TokenizerJSON)
		if err != nil {
			return nil, fmt.Errorf("api: tokenizer.json: %w", err)
		}
		s.tokRaw, s.tokDigest = sha256.Sum256(m.TokenizerJSON), digest
	}
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("GET /v1/models", s.auth(s.opts.APIKey, s.models))
	s.mux.HandleFunc("POST /v1/completions", s.auth(s.opts.APIKey, s.completions))
	s.mux.HandleFunc("POST /v1/chat/completions", s.auth(s.opts.APIKey, s.chatCompletions))
	s.mux.HandleFunc("POST /update_weights", s.auth(s.opts.AdminKey, s.updateWeights))
	s.mux.HandleFunc("POST /pause", s.auth(s.opts.AdminKey, func(w http.ResponseWriter, r *http.Request) {
		s.gen.Pause()
		wire.WriteJSON(w, map[string]any{"status": "paused"})
	}))
	s.mux.HandleFunc("POST /resume", s.auth(s.opts.AdminKey, func(w http.ResponseWriter, r *http.Request) {
		s.gen.Resume()
		wire.WriteJSON(w, map[string]any{"status": "running"})
	}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		wire.WriteError(w, &wire.Error{Status: 404, Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path), Type: "NotFoundError", Code: 404})
	})
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) auth(key string, h http.HandlerFunc) http.HandlerFunc {
	if key == "" {
		return h
	}
	want := []byte("Bearer " + key)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			wire.WriteError(w, &wire.Error{Status: 401, Message: "missing or wrong API key (Authorization: Bearer ...)", Type: "AuthenticationError", Code: 401})
			return
		}
		h(w, r)
	}
}

// NewHTTPServer wraps a handler in an http.Server with the timeouts a server on a network needs:
// headers within 10 s and idle keep-alive connections closed after 2 minutes. Bodies have their
// own deadline (Options.BodyTimeout); there is no write timeout, since a generation
// streams for as long as it takes.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
}

// decodeBody reads a JSON body strictly enough to report malformed input with a 400, within
// BodyTimeout.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		// The deadline stays, so that the server's attempt to drain the rest of the body fails
		// too and the connection closes.
		w.Header().Set("Connection", "close")
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return &wire.Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("the body is larger than %d bytes", s.opts.MaxBodyBytes), Type: "BadRequestError", Code: http.StatusRequestEntityTooLarge}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return &wire.Error{Status: http.StatusRequestTimeout, Message: fmt.Sprintf("the body did not arrive within %s", s.opts.BodyTimeout), Type: "BadRequestError", Code: http.StatusRequestTimeout}
		}
		return wire.BadRequest("", "reading the body: %v", err)
	}
	// Clear the deadline: the connection's background read, which notices a client that goes
	// away mid-generation, must not time out.
	_ = rc.SetReadDeadline(time.Time{})
	if err := json.Unmarshal(body, v); err != nil {
		return wire.BadRequest("", "malformed JSON body: %v", err)
	}
	return nil
}

// encode tokenises prompt text, refusing text too long for max_model_len before paying for it:
// text of n bytes is at least n / MaxTokenBytes tokens, and NFC normalisation shrinks text at most
// threefold, hence the margin of four.
func (s *Server) encode(text string) ([]int, error) {
	if least := len(text) / (4 * s.tok.MaxTokenBytes()); least >= s.gen.MaxModelLen() {
		return nil, wire.BadRequest("prompt", "the prompt is %d bytes, so at least %d tokens, beyond max_model_len %d", len(text), least, s.gen.MaxModelLen())
	}
	return s.tok.Encode(text), nil
}

func (s *Server) decode(ids []int, skipSpecial bool) string {
	text, err := s.tok.Decode(ids, skipSpecial)
	if err != nil {
		return ""
	}
	return text
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	if len(s.gen.Versions()) == 0 {
		http.Error(w, "no model loaded", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	var data []map[string]any
	for _, v := range s.gen.Versions() {
		if v.Draining {
			continue
		}
		entry := map[string]any{"id": v.Name, "object": "model", "created": v.Loaded.Unix(), "owned_by": "spa", "root": v.Name, "max_model_len": s.gen.MaxModelLen()}
		data = append(data, entry)
		if v.Latest {
			alias := map[string]any{}
			for k, x := range entry {
				alias[k] = x
			}
			alias["id"], alias["parent"] = s.gen.Name(), v.Name
			data = append(data, alias)
		}
	}
	wire.WriteJSON(w, map[string]any{"object": "list", "data": data})
}

func newID(prefix string) string { return prefix + "-" + strings.ToLower(nuid.Next()) }

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req wire.CompletionRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		wire.WriteError(w, err)
		return
	}
	p, err := req.Check()
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	top := 0
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > 20 {
			wire.WriteError(w, wire.BadRequest("logprobs", "logprobs must be in [0, 20], got %d", *req.Logprobs))
			return
		}
		top = *req.Logprobs
	}
	if req.Echo && req.Logprobs != nil {
		wire.WriteError(w, wire.BadRequest("echo", "echo with logprobs (prompt logprobs) is not supported by spa serve"))
		return
	}
	prompts, err := wire.ParsePrompts(req.Prompt, s.encode, s.opts.MaxRequestSeqs)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	ru, err := s.start(r.Context(), prompts, p, req.Model, top)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	id, created := newID("cmpl"), time.Now().Unix()
	echo := func(c *choice) string {
		if req.Echo {
			return s.decode(c.prompt, p.SkipSpecial)
		}
		return ""
	}
	if req.Stream {
		var opening []any
		for _, c := range ru.choices {
			if e := echo(c); e != "" {
				opening = append(opening, wire.CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: s.gen.Name(), Choices: []wire.CompletionChoice{{Index: c.index, Text: e}}})
			}
		}
		var usage func() any
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			usage = func() any {
				return wire.CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: ru.version(), Choices: []wire.CompletionChoice{}, Usage: ru.usage()}
			}
		}
		ru.streamSSE(w, opening, usage, p.ReturnIDs || req.Logprobs != nil, func(ce choiceEvent, text string, finished bool) any {
			n := len(ce.c.ids)
			ch := wire.CompletionChoice{Index: ce.c.index, Text: text}
			if ce.ev.Token != nil && p.ReturnIDs {
				ch.TokenIDs = []int{ce.ev.Token.ID}
				if n == 1 {
					ch.PromptTokenIDs = ce.c.prompt
				}
			}
			if ce.ev.Token != nil && req.Logprobs != nil {
				ch.Logprobs = ru.completionLogprobs(ce.c, n-1, n, p.AsTokenIDs)
			}
			if finished {
				f := ce.c.finish
				ch.FinishReason, ch.StopReason = &f, ce.c.stop
			}
			return wire.CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: ce.c.version, Choices: []wire.CompletionChoice{ch}}
		})
		return
	}
	if err := ru.wait(r); err != nil {
		wire.WriteError(w, err)
		return
	}
	resp := wire.CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: ru.version(), Usage: ru.usage()}
	for _, c := range ru.choices {
		f := c.finish
		ch := wire.CompletionChoice{Index: c.index, Text: echo(c) + c.text, FinishReason: &f, StopReason: c.stop}
		if p.ReturnIDs {
			ch.TokenIDs, ch.PromptTokenIDs = c.ids, c.prompt
		}
		if req.Logprobs != nil {
			ch.Logprobs = ru.completionLogprobs(c, 0, len(c.ids), p.AsTokenIDs)
		}
		resp.Choices = append(resp.Choices, ch)
	}
	wire.WriteJSON(w, resp)
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var req wire.ChatRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		wire.WriteError(w, err)
		return
	}
	p, err := req.Check()
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	if len(req.Messages) == 0 {
		wire.WriteError(w, wire.BadRequest("messages", "messages must not be empty"))
		return
	}
	top := 0
	if req.TopLogprobs != nil {
		if *req.TopLogprobs < 0 || *req.TopLogprobs > 20 || !req.Logprobs {
			wire.WriteError(w, wire.BadRequest("top_logprobs", "top_logprobs must be in [0, 20] and needs logprobs: true"))
			return
		}
		top = *req.TopLogprobs
	}
	gen := req.AddGenerationPrompt == nil || *req.AddGenerationPrompt
	text, err := s.tmpl.Render(req.Messages, gen)
	if err != nil {
		wire.WriteError(w, wire.BadRequest("messages", "%v", err))
		return
	}
	prompt, err := s.encode(text)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	ru, err := s.start(r.Context(), [][]int{prompt}, p, req.Model, top)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	id, created := newID("chatcmpl"), time.Now().Unix()
	if req.Stream {
		var opening []any
		for _, c := range ru.choices {
			opening = append(opening, wire.ChatResponse{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.gen.Name(),
				Choices: []wire.ChatChoice{{Index: c.index, Delta: &wire.ChatMessage{Role: "assistant"}}}})
		}
		var usage func() any
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			usage = func() any {
				return wire.ChatResponse{ID: id, Object: "chat.completion.chunk", Created: created, Model: ru.version(), Choices: []wire.ChatChoice{}, Usage: ru.usage()}
			}
		}
		ru.streamSSE(w, opening, usage, p.ReturnIDs || req.Logprobs, func(ce choiceEvent, text string, finished bool) any {
			n := len(ce.c.ids)
			ch := wire.ChatChoice{Index: ce.c.index, Delta: &wire.ChatMessage{Content: text}}
			if ce.ev.Token != nil && p.ReturnIDs {
				ch.TokenIDs = []int{ce.ev.Token.ID}
			}
			if ce.ev.Token != nil && req.Logprobs {
				ch.Logprobs = ru.chatLogprobs(ce.c, n-1, n, p.AsTokenIDs)
			}
			if finished {
				f := ce.c.finish
				ch.FinishReason, ch.StopReason = &f, ce.c.stop
			}
			return wire.ChatResponse{ID: id, Object: "chat.completion.chunk", Created: created, Model: ce.c.version, Choices: []wire.ChatChoice{ch}}
		})
		return
	}
	if err := ru.wait(r); err != nil {
		wire.WriteError(w, err)
		return
	}
	resp := wire.ChatResponse{ID: id, Object: "chat.completion", Created: created, Model: ru.version(), Usage: ru.usage()}
	if p.ReturnIDs {
		resp.PromptTokenIDs = prompt
	}
	for _, c := range ru.choices {
		f := c.finish
		ch := wire.ChatChoice{Index: c.index, Message: &wire.ChatMessage{Role: "assistant", Content: c.text}, FinishReason: &f, StopReason: c.stop}
		if p.ReturnIDs {
			ch.TokenIDs = c.ids
		}
		if req.Logprobs {
			ch.Logprobs = ru.chatLogprobs(c, 0, len(c.ids), p.AsTokenIDs)
		}
		resp.Choices = append(resp.Choices, ch)
	}
	wire.WriteJSON(w, resp)
}

// streamSSE answers with Server-Sent Events: the opening chunks, then one chunk per engine event
// that carries text, a finish, or (when everyToken) a token the client asked to see, built by
// chunk; then the usage chunk, when usage is not nil; then [DONE].
func (r *run) streamSSE(w http.ResponseWriter, opening []any, usage func() any, everyToken bool, chunk func(ce choiceEvent, text string, finished bool) any) {
	sse := newSSE(w)
	for _, o := range opening {
		sse.send(o)
	}
	for ce := range r.events {
		text, finished := r.apply(ce)
		if text == "" && !finished && (!everyToken || ce.ev.Token == nil) {
			continue
		}
		sse.send(chunk(ce, text, finished))
	}
	if usage != nil {
		sse.send(usage())
	}
	sse.done()
}

// wait takes every engine event into its choice, for a non-streaming response.
func (r *run) wait(req *http.Request) error {
	for ce := range r.events {
		r.apply(ce)
	}
	return r.failed(req)
}

// failed reports an engine failure (not a client disconnect) as a 500.
func (r *run) failed(req *http.Request) error {
	for _, c := range r.choices {
		if c.err != nil && req.Context().Err() == nil && !errors.Is(c.err, context.Canceled) {
			return &wire.Error{Status: 500, Message: "generation failed: " + c.err.Error(), Type: "InternalServerError", Code: 500}
		}
	}
	return nil
}

func (r *run) version() string {
	for _, c := range r.choices {
		if c.version != "" {
			return c.version
		}
	}
	return r.s.gen.Name()
}

func (r *run) usage() *wire.Usage {
	u := &wire.Usage{}
	seen := map[int]bool{}
	for _, c := range r.choices {
		// n > 1 repeats a prompt; count it once, as OpenAI does.
		if p := c.index / r.p.N; !seen[p] {
			seen[p] = true
			u.PromptTokens += len(c.prompt)
		}
		u.CompletionTokens += len(c.ids)
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

func (r *run) completionLogprobs(c *choice, from, to int, asIDs bool) *wire.CompletionLogprobs {
	lp := &wire.CompletionLogprobs{}
	offset := 0
	for i := from; i < to; i++ {
		tok := r.tokenString(c.ids[i], asIDs)
		lp.Tokens = append(lp.Tokens, tok)
		lp.TokenLogprobs = append(lp.TokenLogprobs, c.lps[i])
		lp.TextOffset = append(lp.TextOffset, offset)
		offset += len(tok)
		top := map[string]float64{}
		for k, id := range c.tops[i] {
			top[r.tokenString(id, asIDs)] = c.topLPs[i][k]
		}
		lp.TopLogprobs = append(lp.TopLogprobs, top)
	}
	return lp
}

func (r *run) chatLogprobs(c *choice, from, to int, asIDs bool) *struct {
	Content []wire.ChatLogprob `json:"content"`
} {
	out := &struct {
		Content []wire.ChatLogprob `json:"content"`
	}{Content: []wire.ChatLogprob{}}
	entry := func(id int, lp float64) wire.ChatTopLogprob {
		tok := r.tokenString(id, asIDs)
		b := make([]int, 0, len(tok))
		for _, x := range []byte(tok) {
			b = append(b, int(x))
		}
		return wire.ChatTopLogprob{Token: tok, Logprob: lp, Bytes: b}
	}
	for i := from; i < to; i++ {
		cl := wire.ChatLogprob{ChatTopLogprob: entry(c.ids[i], c.lps[i]), TopLogprobs: []wire.ChatTopLogprob{}}
		for k, id := range c.tops[i] {
			cl.TopLogprobs = append(cl.TopLogprobs, entry(id, c.topLPs[i][k]))
		}
		out.Content = append(out.Content, cl)
	}
	return out
}

type updateRequest struct {
	WeightDir string          `json:"weight_dir"`
	Version   json.RawMessage `json:"version"`
	Model     string          `json:"model"`
}

// updateWeights loads a checkpoint as a new version while serving, then makes it the latest.
func (s *Server) updateWeights(w http.ResponseWriter, r *http.Request) {
	var req updateRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		wire.WriteError(w, err)
		return
	}
	if req.WeightDir == "" {
		wire.WriteError(w, wire.BadRequest("weight_dir", "weight_dir is required"))
		return
	}
	var number int64
	name := req.Model
	var vs string
	switch {
	case json.Unmarshal(req.Version, &number) == nil:
		if name == "" {
			name = bus.VersionName(s.gen.Name(), number)
		}
	case json.Unmarshal(req.Version, &vs) == nil && vs != "":
		if name == "" {
			name = vs
		}
	default:
		wire.WriteError(w, wire.BadRequest("version", "version is required: a whole number or a name"))
		return
	}
	if err := s.gen.CheckVersion(name, number); err != nil {
		param := "version"
		if req.Model != "" {
			param = "model"
		}
		wire.WriteError(w, wire.BadRequest(param, "%v", err))
		return
	}
	dir, err := s.weightDir(req.WeightDir)
	if err != nil {
		wire.WriteError(w, err)
		return
	}
	if err := s.sameTokenizer(dir); err != nil {
		wire.WriteError(w, err)
		return
	}
	start := time.Now()
	if err := s.gen.LoadVersion(r.Context(), name, number, dir); err != nil {
		ae := &wire.Error{Status: http.StatusBadRequest, Message: err.Error(), Type: "BadRequestError", Param: "weight_dir", Code: http.StatusBadRequest}
		switch {
		case errors.Is(err, gen.ErrClosed):
			ae.Status, ae.Type, ae.Param = http.StatusServiceUnavailable, "ServiceUnavailableError", ""
		case errors.Is(err, context.DeadlineExceeded):
			ae.Status, ae.Type = http.StatusGatewayTimeout, "TimeoutError"
		}
		ae.Code = ae.Status
		wire.WriteError(w, ae)
		return
	}
	wire.WriteJSON(w, map[string]any{"status": "ok", "model": name, "version": number, "load_seconds": time.Since(start).Seconds()})
}

// weightDir resolves a requested checkpoint directory, symlinks included, and refuses one outside
// WeightsRoot when that is set. Loading from the resolved path means a link swapped after the
// check cannot redirect the load.
func (s *Server) weightDir(dir string) (string, error) {
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", wire.BadRequest("weight_dir", "weight_dir %s: %v", dir, err)
	}
	if resolved, err = filepath.Abs(resolved); err != nil {
		return "", wire.BadRequest("weight_dir", "weight_dir %s: %v", dir, err)
	}
	if s.opts.WeightsRoot == "" {
		return resolved, nil
	}
	root, err := filepath.EvalSymlinks(s.opts.WeightsRoot)
	if err == nil {
		root, err = filepath.Abs(root)
	}
	if err != nil {
		return "", &wire.Error{Status: http.StatusInternalServerError, Message: fmt.Sprintf("server.weights_root %s: %v", s.opts.WeightsRoot, err), Type: "InternalServerError", Code: http.StatusInternalServerError}
	}
	if rel, err := filepath.Rel(root, resolved); err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", &wire.Error{Status: http.StatusForbidden, Message: fmt.Sprintf("weight_dir %s is outside server.weights_root %s", dir, s.opts.WeightsRoot), Type: "PermissionDeniedError", Param: "weight_dir", Code: http.StatusForbidden}
	}
	return resolved, nil
}

// sameTokenizer refuses a checkpoint that carries a tokenizer.json other than the served one: the
// server decodes every version's tokens with the tokenizer it started with. A checkpoint without
// one (weights only) is served with the served tokenizer.
//
// Every weight sync passes here. The learner copies the file byte for byte, so equal bytes settle
// it with one hash; only a file that differs is parsed and compared by content.
func (s *Server) sameTokenizer(dir string) error {
	path := filepath.Join(dir, "tokenizer.json")
	data, err := ReadTokenizerJSON(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return wire.BadRequest("weight_dir", "%v", err)
	}
	if s.tokDigest == "" || sha256.Sum256(data) == s.tokRaw {
		return nil
	}
	digest, err := tokenizerDigest(data)
	if err != nil {
		return wire.BadRequest("weight_dir", "%s: %v", path, err)
	}
	if digest != s.tokDigest {
		return wire.BadRequest("weight_dir", "%s has another tokenizer.json than the served checkpoint; a server serves one tokenizer, so start another server for this model", dir)
	}
	return nil
}

// metrics writes Prometheus text format.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	st := s.gen.Stats()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	p := func(name, help, typ string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	p("spa_requests_total", "Sequences submitted.", "counter", st.Requests)
	p("spa_requests_aborted_total", "Sequences aborted (client gone, errors, shutdown).", "counter", st.Aborted)
	p("spa_queue_depth", "Sequences waiting for a slot.", "gauge", st.Waiting)
	p("spa_running_sequences", "Sequences being decoded.", "gauge", st.Running)
	p("spa_prompt_tokens_total", "Prompt tokens computed (prefill).", "counter", st.PromptTokens)
	p("spa_generated_tokens_total", "Tokens generated.", "counter", st.GeneratedTokens)
	ttft := 0.0
	if st.FirstTokens > 0 {
		ttft = st.FirstTokenTime.Seconds() / float64(st.FirstTokens)
	}
	p("spa_prefix_cache_lookups_total", "Prefills that looked for a cached prefix.", "counter", st.PrefixLookups)
	p("spa_prefix_cache_hits_total", "Prefills that reused a cached prefix.", "counter", st.PrefixHits)
	p("spa_prefix_cache_reused_tokens_total", "Prompt tokens taken from the prefix cache instead of computed.", "counter", st.ReusedTokens)
	p("spa_time_to_first_token_seconds_mean", "Mean time from submission to the first token.", "gauge", ttft)
	versions := s.gen.Versions()
	p("spa_loaded_versions", "Policy versions loaded.", "gauge", len(versions))
	used, slots := 0, 0
	for _, v := range versions {
		used += v.Running
		slots += v.Slots
	}
	if slots > 0 {
		p("spa_kv_cache_usage_ratio", "Share of KV-cache slots in use.", "gauge", float64(used)/float64(slots))
	}
	for _, v := range versions {
		fmt.Fprintf(w, "spa_version_info{model=%q,latest=\"%v\"} 1\n", v.Name, v.Latest)
	}
}

// sse writes Server-Sent Events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
	// failed is set once an event could not be encoded: the client got an error event, and
	// nothing more but [DONE].
	failed bool
}

func newSSE(w http.ResponseWriter) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	return &sse{w: w, f: f}
}

func (s *sse) send(v any) {
	if s.failed {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		s.failed = true
		data, _ = json.Marshal(map[string]any{"error": wire.EncodeError(err)})
	}
	fmt.Fprintf(s.w, "data: %s\n\n", data)
	if s.f != nil {
		s.f.Flush()
	}
}

func (s *sse) done() {
	fmt.Fprint(s.w, "data: [DONE]\n\n")
	if s.f != nil {
		s.f.Flush()
	}
}
