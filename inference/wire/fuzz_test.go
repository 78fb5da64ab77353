package wire

import (
	"encoding/json"
	"testing"
)

// FuzzRequest feeds arbitrary bodies to the request decoder: the JSON decoding, the sampling
// checks and the prompt parser. None may panic, and whatever they accept must be within the
// bounds the engine relies on.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"prompt":"x","max_tokens":2}`,
		`{"prompt":[1,2,3],"n":4,"temperature":0.5,"top_p":0.9,"top_k":5,"seed":-3,"stop":["a","b"]}`,
		`{"prompt":[[1],[2,3]],"logprobs":3,"stop_token_ids":[7]}`,
		`{"prompt":["a","b"],"max_completion_tokens":5,"stop":"z"}`,
		`{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":2}`,
		`{"prompt":{},"n":1e9}`,
		`{"prompt":[[]]}`,
		`{"prompt":[""]}`,
		`{"prompt":""}`,
	} {
		f.Add([]byte(seed))
	}
	encode := func(s string) ([]int, error) {
		ids := make([]int, len(s))
		for i := range s {
			ids[i] = int(s[i])
		}
		return ids, nil
	}
	const maxPrompts = 8
	f.Fuzz(func(t *testing.T, body []byte) {
		var req CompletionRequest
		if json.Unmarshal(body, &req) == nil {
			if p, err := req.Check(); err == nil {
				checkParams(t, p)
			}
			if prompts, err := ParsePrompts(req.Prompt, encode, maxPrompts); err == nil {
				if len(prompts) == 0 || len(prompts) > maxPrompts {
					t.Fatalf("accepted %d prompts", len(prompts))
				}
				for _, p := range prompts {
					if len(p) == 0 {
						t.Fatalf("accepted an empty prompt from %s", req.Prompt)
					}
				}
			}
		}
		var chat ChatRequest
		if json.Unmarshal(body, &chat) == nil {
			if p, err := chat.Check(); err == nil {
				checkParams(t, p)
			}
		}
	})
}

func checkParams(t *testing.T, p Params) {
	t.Helper()
	s := p.Sampling
	switch {
	case p.N < 1 || p.N > MaxN:
		t.Fatalf("accepted n %d", p.N)
	case p.MaxTokens < 0:
		t.Fatalf("accepted max_tokens %d", p.MaxTokens)
	case !(s.Temperature >= 0 && s.Temperature <= 100):
		t.Fatalf("accepted temperature %v", s.Temperature)
	case !(s.TopP > 0 && s.TopP <= 1):
		t.Fatalf("accepted top_p %v", s.TopP)
	case s.TopK < -1:
		t.Fatalf("accepted top_k %d", s.TopK)
	}
	for _, id := range p.StopTokenIDs {
		if id < 0 {
			t.Fatalf("accepted stop token id %d", id)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatalf("the decoder accepted what the sampler refuses: %v", err)
	}
	for _, stop := range p.Stops {
		if stop == "" {
			t.Fatal("accepted an empty stop string")
		}
	}
}
