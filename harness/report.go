package harness

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/model"
)

// Report is what a run produced.
type Report struct {
	Path    string         `json:"path"`
	Plots   []string       `json:"plots"`
	Methods []MethodResult `json:"methods"`
	Env     string         `json:"env"`
	// Timings are the stages' wall times, in order; the report's own writing is not included.
	Timings []StageTime `json:"timings"`
}

// MethodResult holds a method's evaluations: the base policy, the PPO start (after world-model
// SFT, for spa), and the result.
type MethodResult struct {
	Method string `json:"method"`
	// Init is the model as initialised, for a run trained from scratch.
	Init  *Eval `json:"init,omitempty"`
	Base  *Eval `json:"base"`
	Start *Eval `json:"start,omitempty"`
	Final *Eval `json:"final"`
}

// series are a method's numbers by PPO step, read back from metrics.jsonl.
type series struct {
	valStep, pass1, passK, greedy []float64
	step, reward, penalty, moves  []float64
	success                       []float64 // the share of the step's episodes that succeeded
	formatErrors, pg, vf          []float64 // formatErrors: turns with a format error per episode
	entropy, clipFrac, kl         []float64
	// critic is true when the method trained a critic (its value loss means something).
	critic bool
}

func (p *pipeline) readSeries() (map[string]*series, error) {
	f, err := os.Open(filepath.Join(p.o.Dir, "metrics.jsonl"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]*series{}
	get := func(m string) *series {
		if out[m] == nil {
			out[m] = &series{}
		}
		return out[m]
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var rec struct {
			Stage  string `json:"stage"`
			Method string `json:"method"`
			Step   int    `json:"step"`
			Eval   *Eval  `json:"eval"`
			Report *struct {
				Metrics learner.PPOMetrics `json:"metrics"`
			} `json:"report"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		switch {
		case rec.Stage == "validate" && rec.Eval != nil:
			s := get(rec.Method)
			s.valStep = append(s.valStep, float64(rec.Step))
			s.pass1 = append(s.pass1, 100*rec.Eval.Pass1)
			s.passK = append(s.passK, 100*rec.Eval.PassK)
			s.greedy = append(s.greedy, 100*rec.Eval.Greedy)
		case rec.Stage == "ppo" && rec.Report != nil:
			s, mt := get(rec.Method), rec.Report.Metrics
			s.step = append(s.step, float64(rec.Step))
			s.reward = append(s.reward, mt.Reward)
			s.success = append(s.success, mt.Success)
			s.penalty = append(s.penalty, mt.FormatPenalty)
			s.moves = append(s.moves, mt.Moves)
			s.formatErrors = append(s.formatErrors, mt.FormatErrors*mt.Turns)
			s.pg = append(s.pg, mt.PolicyLoss)
			s.vf = append(s.vf, mt.ValueLoss)
			s.entropy = append(s.entropy, mt.Entropy)
			s.clipFrac = append(s.clipFrac, mt.ClipFrac)
			s.kl = append(s.kl, 100*mt.ApproxKL)
			s.critic = s.critic || mt.CriticNorm > 0
		}
	}
	return out, sc.Err()
}

// report writes report.md and the plots.
func (p *pipeline) report() (*Report, error) {
	r := &Report{Path: filepath.Join(p.o.Dir, "report.md"), Env: p.spec.Name + " " + p.spec.Variant, Methods: p.st.methodResults(p.cfg.Run.Methods)}
	ser, err := p.readSeries()
	if err != nil {
		return nil, err
	}
	// The success curve starts at the PPO start's evaluation (step 0) and ends at the final one,
	// which stands in for a validation at the last step.
	for _, mr := range r.Methods {
		s := ser[mr.Method]
		if s == nil {
			continue
		}
		start := mr.Start
		if start == nil {
			start = mr.Base
		}
		if start != nil {
			s.valStep = append([]float64{0}, s.valStep...)
			s.pass1 = append([]float64{100 * start.Pass1}, s.pass1...)
			s.passK = append([]float64{100 * start.PassK}, s.passK...)
			s.greedy = append([]float64{100 * start.Greedy}, s.greedy...)
		}
		if mr.Final != nil && len(s.step) > 0 {
			s.valStep = append(s.valStep, s.step[len(s.step)-1])
			s.pass1 = append(s.pass1, 100*mr.Final.Pass1)
			s.passK = append(s.passK, 100*mr.Final.PassK)
			s.greedy = append(s.greedy, 100*mr.Final.Greedy)
		}
	}
	// A line is a name, its points, and whether it is drawn dashed (the second quantity of a
	// method, in the method's colour family).
	type line struct {
		name   string
		x, y   []float64
		dashed bool
	}
	specs := []struct {
		file, title, y string
		lines          func(m string, s *series) []line
	}{
		{"success.png", "Validation success vs PPO step", "%", func(m string, s *series) []line {
			return []line{{m + " Pass@1", s.valStep, s.pass1, false}, {m + " Pass@k", s.valStep, s.passK, true}, {m + " greedy Pass@1", s.valStep, s.greedy, true}}
		}},
		{"reward.png", "Training reward vs PPO step", "mean per episode", func(m string, s *series) []line {
			return []line{{m + " reward", s.step, s.reward, false}, {m + " of it format penalty", s.step, s.penalty, true}}
		}},
		{"behaviour.png", "What the policy does vs PPO step", "per episode", func(m string, s *series) []line {
			return []line{{m + " moves", s.step, s.moves, false}, {m + " turns with a format error", s.step, s.formatErrors, true}}
		}},
		{"policy.png", "Policy change vs PPO step", "nats / share", func(m string, s *series) []line {
			return []line{{m + " entropy (nats per token)", s.step, s.entropy, false}, {m + " clip fraction", s.step, s.clipFrac, true}, {m + " approx KL x 100", s.step, s.kl, true}}
		}},
		{"losses.png", "Losses vs PPO step", "loss", func(m string, s *series) []line {
			ls := []line{{m + " policy", s.step, s.pg, false}}
			if s.critic {
				ls = append(ls, line{m + " value", s.step, s.vf, true})
			}
			return ls
		}},
	}
	for _, sp := range specs {
		pl := plot.New()
		pl.Title.Text, pl.X.Label.Text, pl.Y.Label.Text = sp.title, "PPO step", sp.y
		i := 0
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, m := range p.cfg.Run.Methods {
			s := ser[m]
			if s == nil {
				continue
			}
			for _, l := range sp.lines(m, s) {
				if len(l.x) == 0 {
					continue
				}
				pts := make(plotter.XYs, len(l.x))
				for j := range pts {
					pts[j].X, pts[j].Y = l.x[j], l.y[j]
					lo, hi = math.Min(lo, l.y[j]), math.Max(hi, l.y[j])
				}
				ln, points, err := plotter.NewLinePoints(pts)
				if err != nil {
					return nil, err
				}
				c := plotutil.Color(i)
				ln.Color, points.Color = c, c
				if l.dashed {
					ln.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				}
				points.Shape = plotutil.Shape(i)
				pl.Add(ln, points)
				pl.Legend.Add(l.name, ln, points)
				i++
			}
		}
		// The legend sits in a band above the data, so that it never covers a line.
		if i > 0 {
			span := math.Max(hi-lo, 1e-6)
			pl.Y.Min, pl.Y.Max = lo-0.05*span, hi+(0.1+0.09*float64(i))*span
		}
		pl.Legend.Top = true
		pl.Add(plotter.NewGrid())
		path := filepath.Join(p.o.Dir, sp.file)
		if err := pl.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
			return nil, fmt.Errorf("plot %s: %w", sp.file, err)
		}
		r.Plots = append(r.Plots, path)
	}
	r.Timings = p.st.timings()
	if err := os.WriteFile(r.Path, []byte(p.markdown(r)), 0o644); err != nil {
		return nil, err
	}
	return r, p.st.complete("report", nil)
}

func pct(e *Eval, f func(*Eval) float64) string {
	if e == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f", 100*f(e))
}

func num(e *Eval, f func(*Eval) float64, format string) string {
	if e == nil {
		return "–"
	}
	return fmt.Sprintf(format, f(e))
}

// ci formats a share with its interval, in percent.
func ci(x float64, iv Interval) string {
	return fmt.Sprintf("%.1f [%.1f, %.1f]", 100*x, 100*iv.Low, 100*iv.High)
}

// hasActionInfo is false for evaluations without a first move to measure (the untrained model)
// and for runs recorded before the measure existed.
func (e *Eval) hasActionInfo() bool { return e.ActionInfo != 0 || e.ActionInfoChance != 0 }

// actionInfo formats how much the first move depends on the puzzle, with its chance level.
func actionInfo(e *Eval) string {
	if !e.hasActionInfo() {
		return "–"
	}
	if e.ActionInfoP == 0 {
		return fmt.Sprintf("%.3f (%.3f)", e.ActionInfo, e.ActionInfoChance)
	}
	return fmt.Sprintf("%.3f (%.3f, p %.2f)", e.ActionInfo, e.ActionInfoChance, e.ActionInfoP)
}

// Table is the report's results table in Markdown.
func (r *Report) Table() string {
	var b strings.Builder
	k := 0
	for _, m := range r.Methods {
		if m.Final != nil {
			k = m.Final.K
		}
	}
	fmt.Fprintf(&b, "| method | policy | Pass@1 %% [95%% CI] | Pass@%d %% [95%% CI] | greedy Pass@1 %% | mean reward | actions per episode | format errors %% | first move from the state, bits (chance, p) | state perplexity |\n|---|---|---|---|---|---|---|---|---|---|\n", k)
	for _, m := range r.Methods {
		rows := []struct {
			label string
			e     *Eval
		}{{"untrained (as initialised)", m.Init}, {"base (format warm-up only)", m.Base}, {"after world-model SFT", m.Start}, {"after PPO", m.Final}}
		for _, row := range rows {
			e := row.e
			if e == nil {
				continue
			}
			// The untrained policy is played once per puzzle: it has no Pass@k for this k.
			passK := "–"
			if e.K == k {
				passK = ci(e.PassK, e.PassKCI)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1f | %.3f | %.2f | %.1f | %s | %.2f |\n", m.Method, row.label,
				ci(e.Pass1, e.Pass1CI), passK, 100*e.Greedy, e.MeanReward, e.MeanActions, 100*e.FormatErrors, actionInfo(e), e.StatePPL)
		}
	}
	return b.String()
}

// PairedTable compares every method's final policy with every later method's on the same
// validation puzzles, and each method's final policy with its own PPO start: the per-puzzle
// differences in Pass@1 and Pass@k with their intervals. It is empty without two evaluations of
// the same puzzles.
func (r *Report) PairedTable(seed uint64) string {
	var b strings.Builder
	for _, p := range r.pairs() {
		d1, dK, ok := p.diffs(seed)
		if !ok {
			continue
		}
		if b.Len() == 0 {
			fmt.Fprintf(&b, "| comparison (same puzzles) | Pass@1 points [95%% CI] | Pass@%d points [95%% CI] |\n|---|---|---|\n", p.a.K)
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", p.label, points(d1), points(dK))
	}
	return b.String()
}

// points formats a paired difference in percentage points with its interval.
func points(d Paired) string {
	return fmt.Sprintf("%+.1f [%+.1f, %+.1f]", 100*d.Diff, 100*d.CI.Low, 100*d.CI.High)
}

// pair is a comparison of two evaluations of the same puzzles, a − b.
type pair struct {
	label string
	a, b  *Eval
}

// diffs are the pair's per-puzzle differences in Pass@1 and Pass@k, or false when the two
// evaluations are missing or not of the same puzzles and k.
func (p pair) diffs(seed uint64) (pass1, passK Paired, ok bool) {
	if p.a == nil || p.b == nil || p.a.K != p.b.K || len(p.a.Successes) == 0 {
		return Paired{}, Paired{}, false
	}
	a1, aK := perPuzzle(p.a.Successes, p.a.K)
	b1, bK := perPuzzle(p.b.Successes, p.b.K)
	d1, ok1 := pairedDiff(a1, b1, seed)
	dK, okK := pairedDiff(aK, bK, seed)
	return d1, dK, ok1 && okK
}

// pairs are the report's comparisons: each method after PPO against its PPO start, against every
// later method after PPO, and (for a method with a separate start) against the others' base.
func (r *Report) pairs() []pair {
	var pairs []pair
	for i, m := range r.Methods {
		start := m.Start
		if start == nil {
			start = m.Base
		}
		pairs = append(pairs, pair{m.Method + " after PPO − its PPO start", m.Final, start})
		for _, o := range r.Methods[i+1:] {
			pairs = append(pairs, pair{m.Method + " − " + o.Method + " after PPO", m.Final, o.Final})
		}
		if m.Start != nil {
			for _, o := range r.Methods {
				if o.Method != m.Method {
					pairs = append(pairs, pair{m.Method + " after PPO − " + o.Method + " base", m.Final, o.Base})
				}
			}
		}
	}
	return pairs
}

// TimingTable is the report's table of stage wall times in Markdown, with the total.
func (r *Report) TimingTable() string {
	var b strings.Builder
	b.WriteString("| stage | wall time |\n|---|---|\n")
	total := 0.0
	for _, st := range r.Timings {
		fmt.Fprintf(&b, "| %s | %s |\n", st.Stage, time.Duration(st.Seconds*float64(time.Second)).Round(time.Second))
		total += st.Seconds
	}
	fmt.Fprintf(&b, "| **total** | **%s** |\n", time.Duration(total*float64(time.Second)).Round(time.Second))
	return b.String()
}

func (p *pipeline) markdown(r *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# spa run %s\n\n", p.o.ID)
	c := p.cfg
	fmt.Fprintf(&b, "%s, preset %s, methods %s, seed %d; finished %s.\n\n", r.Env, c.Run.Preset, strings.Join(c.Run.Methods, ", "), c.Run.Seed, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "%s\n\n", p.modelLine())
	puzzles, k := c.Run.ValPuzzles, c.Run.ValK
	fmt.Fprintf(&b, "Validation: %d fixed puzzles (seeds %d..%d) x %d samples at temperature %g, base prompt; Pass@1 is the mean success, Pass@%d the share of puzzles solved at least once. State perplexity is that of the true states inside world-model turns on validation puzzles. PPO: %d steps of %d groups x %d episodes on training seeds from %d.\n\n",
		puzzles, c.Run.ValSeed, c.Run.ValSeed+puzzles-1, k, c.Rollout.Temperature, k, c.Learner.PPO.Steps, c.Rollout.Groups, c.Rollout.GroupSize, trainSeeds(c.Run.Seed))
	b.WriteString(r.Table())
	b.WriteString("\nIntervals are 95% percentile-bootstrap intervals over puzzles; greedy Pass@1 is one sample per puzzle at temperature 0. \"First move from the state\" is the mutual information between the puzzle and the first action of its samples, beside what the same estimate gives with the actions dealt to puzzles at random: a policy that ignores the state scores about its chance value; p is the share of those deals that score at least as much.\n\n")
	if t := r.PairedTable(uint64(c.Run.Seed)); t != "" {
		b.WriteString("Paired differences on the same validation puzzles (a difference whose interval excludes 0 is more than noise):\n\n")
		b.WriteString(t)
		b.WriteString("\n")
	}
	for _, pl := range r.Plots {
		name := filepath.Base(pl)
		fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(name, ".png"), name)
	}
	if s := p.st.Stages["selfplay"]; s != nil && s.Counts != nil {
		fmt.Fprintf(&b, "Self-play: %d episodes (%s exploration), %d SFT conversations after ground-truth replacement and filtering (%d malformed, %d duplicates dropped).\n",
			s.Counts["episodes"], c.Run.Explore, s.Counts["sft_examples"], s.Counts["malformed"], s.Counts["duplicates"])
	}
	b.WriteString("\n## Time\n\nWall time of each stage, in the process that finished it (a stage resumed after an interruption counts from the resume):\n\n")
	b.WriteString(r.TimingTable())
	b.WriteString("\nFiles: `metrics.jsonl` (every step), `state.json` (stages), `config.json`, trajectories (`*.jsonl`), checkpoints under each method's directory.\n")
	return b.String()
}

// modelLine says what the run trained: the pretrained run.model or the tiny model from scratch,
// its shapes, and where it was served.
func (p *pipeline) modelLine() string {
	start := "a tiny Qwen2 trained from scratch (domain tokenizer, format warm-up)"
	if p.cfg.Run.Model != "" {
		start = "pretrained " + p.cfg.Run.Model
	}
	if cfg, err := model.LoadConfig(p.initDir); err == nil {
		start += fmt.Sprintf(" (%s: %d layers, hidden %d, vocabulary %d, %s parameters)",
			strings.Join(cfg.Architectures, ","), cfg.NumHiddenLayers, cfg.HiddenSize, cfg.VocabSize, humanParams(cfg.NumParams()))
	}
	served := "the embedded inference server"
	if p.external {
		served = "external servers " + strings.Join(p.endpoints, ", ")
	}
	how, _ := ParseExploration(p.cfg.Run.Explore)
	return fmt.Sprintf("Model: %s; served by %s; self-play explored by %s.", start, served, how.For(p.cfg.Run.Model != ""))
}

// humanParams prints a parameter count as 494.0M or 1.2M.
func humanParams(n int64) string {
	if n >= 1e9 {
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	}
	return fmt.Sprintf("%.1fM", float64(n)/1e6)
}
