package rollout

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/spa-rl/spa/envs"
)

// PassAtK is the unbiased estimator of pass@k from n samples with c successes (Chen et al. 2021):
// 1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n.
func PassAtK(n, c, k int) float64 {
	if k <= 0 || n <= 0 || k > n {
		return math.NaN()
	}
	if n-c < k {
		return 1
	}
	p := 1.0
	for i := n - c + 1; i <= n; i++ {
		p *= 1 - float64(k)/float64(i)
	}
	return 1 - p
}

// EvalOptions configure Evaluate.
type EvalOptions struct {
	Episode EpisodeOptions
	// Puzzles are seeds FirstSeed..FirstSeed+Puzzles-1 (fixed, so evaluations compare); K
	// samples each. A second range (another FirstSeed) lets hyperparameters be tuned on puzzles
	// that the reported numbers never see.
	Puzzles, K int
	FirstSeed  int
	// Concurrency is how many episodes run at once.
	Concurrency int
	// Progress, if set, is called after each episode with (done, total).
	Progress func(done, total int)
}

// EvalResult summarises an evaluation (docs/method.md "Metrics").
type EvalResult struct {
	Env     string `json:"env"`
	Variant string `json:"variant"`
	Model   string `json:"model"`
	Puzzles int    `json:"puzzles"`
	// FirstSeed is the first puzzle's seed; Successes[p] is puzzle FirstSeed+p.
	FirstSeed int     `json:"first_seed"`
	K         int     `json:"k"`
	Episodes  int     `json:"episodes"`
	Pass1     float64 `json:"pass_at_1"`
	// PassK is the share of puzzles with at least one success among their K samples;
	// PassKUnbiased the estimator averaged over puzzles (equal to PassK when n = k).
	PassK         float64 `json:"pass_at_k"`
	PassKUnbiased float64 `json:"pass_at_k_unbiased"`
	// PassAt[j] is pass@(j+1) for every j+1 ≤ K, the unbiased estimator from the K samples
	// averaged over puzzles: the whole curve, not only its ends.
	PassAt []float64 `json:"pass_at"`
	// Successes[p] counts puzzle p's successful samples, for confidence intervals over puzzles
	// and paired comparisons of two policies on the same puzzles.
	Successes []int `json:"successes"`
	// ActionInfo is the mutual information in bits between the puzzle and its samples' first
	// action, ActionInfoChance what the same estimate gives with the actions dealt to puzzles at
	// random (StateDependence); the excess is how much the policy's choice depends on the state.
	ActionInfo       float64 `json:"first_action_info_bits"`
	ActionInfoChance float64 `json:"first_action_info_chance_bits"`
	ActionInfoP      float64 `json:"first_action_info_p"`
	MeanReward       float64 `json:"mean_reward"`
	MeanActions      float64 `json:"mean_actions"`
	FormatErrors     float64 `json:"format_error_rate"`
	Failed           int     `json:"failed_episodes"`
}

// Evaluate plays K samples of each puzzle and computes Pass@1, Pass@k and the rest. newEnv makes
// a fresh environment per episode, and pick the LLM for it (Router.Episode spreads episodes over
// servers and keeps each on one). An episode that fails (the server keeps erroring) counts as a
// failure of its puzzle and is reported in Failed, not silently dropped.
func Evaluate(ctx context.Context, newEnv func() (envs.Env, error), pick func() (LLM, error), tokens *Tokens, o EvalOptions) (EvalResult, error) {
	if o.Puzzles <= 0 || o.K <= 0 {
		return EvalResult{}, fmt.Errorf("evaluate: puzzles and k must be positive, got %d and %d", o.Puzzles, o.K)
	}
	if o.FirstSeed < 0 {
		return EvalResult{}, fmt.Errorf("evaluate: first seed must be >= 0, got %d", o.FirstSeed)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	type job struct{ puzzle, sample int }
	jobs := make(chan job)
	type outcome struct {
		puzzle              int
		success, failed     bool
		reward              float64
		actions, turns      int
		formatErrors        int
		model, env, variant string
		// firstAction is the first valid action of the first turn ("" without one).
		firstAction string
	}
	results := make(chan outcome)
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				out := outcome{puzzle: j.puzzle}
				env, err := newEnv()
				var llm LLM
				if err == nil {
					llm, err = pick()
				}
				if err == nil {
					eo := o.Episode
					puzzle := int64(o.FirstSeed + j.puzzle)
					eo.Seed = puzzle
					eo.ID = fmt.Sprintf("eval-%d-%d", puzzle, j.sample)
					eo.Run = "eval"
					seed := puzzle*1000 + int64(j.sample)
					eo.SampleSeed = &seed
					t, perr := Play(ctx, env, llm, tokens, eo)
					err = perr
					if t != nil {
						out.success, out.reward, out.model, out.env, out.variant = t.Success, t.Reward, t.Model, t.Env, t.Variant
						out.turns = len(t.Turns)
						if len(t.Turns) > 0 && len(t.Turns[0].Valid) > 0 && t.Turns[0].Valid[0] {
							out.firstAction = strings.ToLower(t.Turns[0].Actions[0])
						}
						for _, turn := range t.Turns {
							for _, v := range turn.Valid {
								if v {
									out.actions++
								}
							}
							if !turn.FormatOK {
								out.formatErrors++
							}
						}
					}
					_ = envs.Close(env)
				}
				out.failed = err != nil
				results <- out
			}
		}()
	}
	go func() {
		for p := range o.Puzzles {
			for s := range o.K {
				select {
				case jobs <- job{p, s}:
				case <-ctx.Done():
				}
			}
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	res := EvalResult{Puzzles: o.Puzzles, FirstSeed: o.FirstSeed, K: o.K}
	success := make([]int, o.Puzzles)
	firstActions := make([][]string, o.Puzzles)
	var turns, formatErrors int
	total := o.Puzzles * o.K
	for out := range results {
		res.Episodes++
		if out.failed {
			res.Failed++
		}
		if out.firstAction != "" {
			firstActions[out.puzzle] = append(firstActions[out.puzzle], out.firstAction)
		}
		if out.success {
			success[out.puzzle]++
			res.Pass1++
		}
		res.MeanReward += out.reward
		res.MeanActions += float64(out.actions)
		turns += out.turns
		formatErrors += out.formatErrors
		if res.Model == "" {
			res.Model, res.Env, res.Variant = out.model, out.env, out.variant
		}
		if o.Progress != nil {
			o.Progress(res.Episodes, total)
		}
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	n := float64(res.Episodes)
	res.Pass1 /= n
	res.MeanReward /= n
	res.MeanActions /= n
	if turns > 0 {
		res.FormatErrors = float64(formatErrors) / float64(turns)
	}
	res.Successes = success
	res.PassAt = make([]float64, o.K)
	for _, c := range success {
		if c > 0 {
			res.PassK++
		}
		for k := 1; k <= o.K; k++ {
			res.PassAt[k-1] += PassAtK(o.K, c, k) / float64(o.Puzzles)
		}
	}
	res.PassK /= float64(o.Puzzles)
	res.PassKUnbiased = res.PassAt[o.K-1]
	res.ActionInfo, res.ActionInfoChance, res.ActionInfoP = StateDependence(firstActions, 200, 1)
	return res, nil
}

// StateDependence measures whether a policy's choice depends on what it is shown: the mutual
// information, in bits, between the puzzle and the first action of its samples (first[p] holds
// puzzle p's), and the mean of the same estimate over shuffles that deal the actions to puzzles
// at random, keeping each puzzle's count. The plug-in estimate is biased upwards at a few samples
// a puzzle, so only the difference means something: a policy that ignores the state scores about
// its chance value, and one that picks its first move from the state scores more (up to log2 of
// the number of actions). Pass@1 can rise without it, from a better state-blind habit.
//
// p is the permutation test's one-sided p-value, (1 + shuffles scoring at least bits) / (1 +
// shuffles): small when the puzzle tells more about the first move than chance would.
func StateDependence(first [][]string, shuffles int, seed uint64) (bits, chance, p float64) {
	var all []string
	for _, acts := range first {
		all = append(all, acts...)
	}
	if len(all) == 0 {
		return 0, 0, 1
	}
	bits = mutualInformation(first)
	atLeast := 0
	rng := rand.New(rand.NewPCG(seed, 0x73746174))
	dealt := make([][]string, len(first))
	for range shuffles {
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		rest := all
		for p, acts := range first {
			dealt[p], rest = rest[:len(acts)], rest[len(acts):]
		}
		mi := mutualInformation(dealt)
		chance += mi
		// The tolerance keeps a shuffle that repeats the observed counts from losing to rounding.
		if mi >= bits-1e-12 {
			atLeast++
		}
	}
	if shuffles > 0 {
		chance /= float64(shuffles)
	}
	return bits, chance, float64(1+atLeast) / float64(1+shuffles)
}

// mutualInformation is the plug-in I(puzzle; action) in bits of the counts in first.
func mutualInformation(first [][]string) float64 {
	total := 0
	marginal := map[string]int{}
	for _, acts := range first {
		total += len(acts)
		for _, a := range acts {
			marginal[a]++
		}
	}
	mi := 0.0
	joint := map[string]int{}
	for _, acts := range first {
		clear(joint)
		for _, a := range acts {
			joint[a]++
		}
		for a, n := range joint {
			mi += float64(n) / float64(total) * math.Log2(float64(n)*float64(total)/(float64(len(acts))*float64(marginal[a])))
		}
	}
	return mi
}
