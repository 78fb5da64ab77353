package api

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/spa-rl/spa/inference/gen"
	"github.com/spa-rl/spa/inference/wire"
)

// choice follows one sequence from the engine: it decodes text incrementally, applies stop
// strings (which the engine does not know about), and keeps what the response needs.
type choice struct {
	index   int
	prompt  []int
	ids     []int
	lps     []float64
	tops    [][]int
	topLPs  [][]float64
	text    string // decoded output, after stop-string truncation once finished
	sent    int    // bytes of text already streamed
	finish  string
	stop    any // stop_reason: a stop string, a stop token id, or nil
	version string
	cancel  context.CancelFunc
	err     error
	stopHit bool
	// decoded is the text of ids[:clean], which ends on a whole character; only the tokens after
	// it are decoded again as new ones arrive.
	decoded string
	clean   int
}

type run struct {
	s       *Server
	p       wire.Params
	choices []*choice
	events  chan choiceEvent
}

type choiceEvent struct {
	c  *choice
	ev gen.Event
}

// start submits every prompt n times and merges their events into one channel.
func (s *Server) start(ctx context.Context, prompts [][]int, p wire.Params, modelName string, topLogprobs int) (*run, error) {
	if total := len(prompts) * p.N; total > s.opts.MaxRequestSeqs {
		return nil, wire.BadRequest("n", "%d prompts × n %d = %d sequences in one request; the limit (server.max_request_seqs) is %d", len(prompts), p.N, total, s.opts.MaxRequestSeqs)
	} else if room := s.gen.QueueRoom(); total > room {
		return nil, queueFull(fmt.Sprintf("%d sequences asked for, room for %d in the queue (server.max_waiting); retry later", total, max(room, 0)))
	}
	r := &run{s: s, p: p, events: make(chan choiceEvent, 64)}
	stops := append([]int(nil), p.StopTokenIDs...)
	type pending struct {
		c  *choice
		ch <-chan gen.Event
	}
	var subs []pending
	for i, prompt := range prompts {
		for k := range p.N {
			cctx, cancel := context.WithCancel(ctx)
			seed := rand.Uint64()
			if p.Seed != nil {
				seed = *p.Seed + uint64(k)
			}
			req := gen.Request{Model: modelName, Prompt: prompt, Sampling: p.Sampling, Seed: seed, MaxTokens: p.MaxTokens,
				StopTokenIDs: append(append([]int(nil), stops...), s.eosFor(p)...), TopLogprobs: topLogprobs, CacheSalt: p.CacheSalt}
			ch, err := s.gen.Submit(cctx, req)
			if err != nil {
				cancel()
				for _, sub := range subs {
					sub.c.cancel()
				}
				return nil, submitError(err)
			}
			c := &choice{index: i*p.N + k, prompt: prompt, cancel: cancel}
			r.choices = append(r.choices, c)
			subs = append(subs, pending{c, ch})
		}
	}
	done := make(chan struct{})
	for _, sub := range subs {
		go func() {
			for ev := range sub.ch {
				r.events <- choiceEvent{sub.c, ev}
			}
			done <- struct{}{}
		}()
	}
	go func() {
		for range subs {
			<-done
		}
		close(r.events)
	}()
	return r, nil
}

func submitError(err error) error {
	switch {
	case errors.Is(err, gen.ErrUnknownModel):
		return &wire.Error{Status: 404, Message: err.Error(), Type: "NotFoundError", Param: "model", Code: 404}
	case errors.Is(err, gen.ErrPromptTooLong):
		return wire.BadRequest("prompt", "%v", err)
	case errors.Is(err, gen.ErrQueueFull):
		return queueFull(err.Error())
	case errors.Is(err, gen.ErrClosed):
		return &wire.Error{Status: 503, Message: err.Error(), Type: "ServiceUnavailableError", Code: 503}
	}
	return wire.BadRequest("", "%v", err)
}

// queueFull is OpenAI's rate-limit shape, which its clients retry with backoff.
func queueFull(msg string) *wire.Error {
	return &wire.Error{Status: http.StatusTooManyRequests, Message: msg, Type: "RateLimitError", Code: http.StatusTooManyRequests}
}

// eosFor is the end-of-sequence ids, unless the request ignores them.
func (s *Server) eosFor(p wire.Params) []int {
	if s.ignoreEOS(p) {
		return nil
	}
	return s.eos
}

func (s *Server) ignoreEOS(p wire.Params) bool { return p.IgnoreEOS }

// apply takes one engine event into its choice. It returns the text to stream (possibly empty)
// and whether the choice just finished.
func (r *run) apply(ce choiceEvent) (string, bool) {
	c, ev := ce.c, ce.ev
	c.version = ev.Version
	if c.finish != "" {
		return "", false // events after a stop string cut the choice short
	}
	if ev.Token != nil {
		c.ids = append(c.ids, ev.Token.ID)
		c.lps = append(c.lps, ev.Token.Logprob)
		c.tops = append(c.tops, ev.Token.TopIDs)
		c.topLPs = append(c.topLPs, ev.Token.TopLPs)
	}
	if ev.Err != nil {
		c.err = ev.Err
	}
	tail := r.s.decode(c.ids[c.clean:], r.p.SkipSpecial)
	text := c.decoded + tail
	if !strings.HasSuffix(tail, "\uFFFD") {
		c.decoded, c.clean = text, len(c.ids)
	}
	// A stop string ends the choice: the text is cut before it (or after, when asked), and the
	// engine stops generating.
	if i, stop := firstStop(text, r.p.Stops); i >= 0 {
		end := i
		if r.p.IncludeStop {
			end = i + len(stop)
		}
		c.text = text[:end]
		c.finish, c.stop = gen.FinishStop, stop
		c.stopHit = true
		c.cancel()
		return r.flush(c, true), true
	}
	c.text = text
	if ev.FinishReason != "" {
		c.finish = ev.FinishReason
		if ev.StopToken >= 0 && !r.isEOS(ev.StopToken) {
			c.stop = ev.StopToken
		}
		c.cancel()
		return r.flush(c, true), true
	}
	return r.flush(c, false), false
}

func (r *run) isEOS(id int) bool {
	for _, e := range r.s.eos {
		if e == id {
			return true
		}
	}
	return false
}

// flush returns the text not yet streamed, holding back an incomplete UTF-8 character and any tail
// that could still become a stop string, unless the choice is finished.
func (r *run) flush(c *choice, final bool) string {
	end := len(c.text)
	if !final {
		if strings.HasSuffix(c.text, "\uFFFD") {
			end = strings.LastIndex(c.text, "\uFFFD")
		}
		hold := 0
		for _, s := range r.p.Stops {
			hold = max(hold, len(s)-1)
		}
		end = max(c.sent, end-hold)
		for end > c.sent && end < len(c.text) && !utf8.RuneStart(c.text[end]) {
			end--
		}
	}
	if end <= c.sent {
		return ""
	}
	out := c.text[c.sent:end]
	c.sent = end
	return out
}

func firstStop(text string, stops []string) (int, string) {
	best, which := -1, ""
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (best < 0 || i < best) {
			best, which = i, s
		}
	}
	return best, which
}

// tokenString is how a token appears in logprobs: its text, or "token_id:N" when asked.
func (r *run) tokenString(id int, asIDs bool) string {
	if asIDs {
		return fmt.Sprintf("token_id:%d", id)
	}
	return r.s.decode([]int{id}, false)
}
