package envs

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Corpus returns text the registered environments produce: each variant's spec (instructions,
// legend, actions) and the states of short random episodes from seeds 0..seeds-1 in every render
// mode. A domain tokenizer trained on it encodes spa's prompts compactly.
func Corpus(seeds int) ([]string, error) {
	var out []string
	rng := rand.New(rand.NewPCG(11, 13))
	for _, info := range List() {
		for _, v := range info.Variants {
			env, err := New(info.Name, v.Name)
			if err != nil {
				return nil, err
			}
			s := env.Spec()
			out = append(out, s.Description, s.Instructions, s.WorldModelInstructions, s.Legend, s.ActionFormat,
				strings.Join(s.Actions, " || "), fmt.Sprintf("You have %d actions left.", s.MaxActions))
			for seed := range seeds {
				if err := env.Reset(int64(seed)); err != nil {
					return nil, fmt.Errorf("corpus: reset %s %s seed %d: %w", info.Name, v.Name, seed, err)
				}
				for step := 0; ; step++ {
					for _, m := range s.RenderModes {
						out = append(out, env.Render(m))
					}
					a := RandomAction(env, rng)
					out = append(out, a)
					st, err := env.Step(a)
					if err != nil || st.Done || step >= s.MaxActions {
						break
					}
				}
			}
		}
	}
	return out, nil
}
