package harness

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
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
	valStep, pass1, passK []float64
	step, reward, pg, vf  []float64
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
				Metrics struct {
					Reward     float64 `json:"reward"`
					PolicyLoss float64 `json:"pg_loss"`
					ValueLoss  float64 `json:"vf_loss"`
				} `json:"metrics"`
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
		case rec.Stage == "ppo" && rec.Report != nil:
			s := get(rec.Method)
			s.step = append(s.step, float64(rec.Step))
			s.reward = append(s.reward, rec.Report.Metrics.Reward)
			s.pg = append(s.pg, rec.Report.Metrics.PolicyLoss)
			s.vf = append(s.vf, rec.Report.Metrics.ValueLoss)
		}
	}
	return out, sc.Err()
}

// report writes report.md and the plots.
func (p *pipeline) report() (*Report, error) {
	r := &Report{Path: filepath.Join(p.o.Dir, "report.md"), Env: p.spec.Name + " " + p.spec.Variant}
	for _, m := range p.cfg.Run.Methods {
		mr := MethodResult{Method: m}
		if s := p.st.Stages[m+":eval-init"]; s != nil {
			mr.Init = s.Eval
		}
		if s := p.st.Stages[m+":eval-base"]; s != nil {
			mr.Base = s.Eval
		}
		if s := p.st.Stages[m+":eval-start"]; s != nil {
			mr.Start = s.Eval
		}
		if s := p.st.Stages[m+":eval-final"]; s != nil {
			mr.Final = s.Eval
		}
		r.Methods = append(r.Methods, mr)
	}
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
		}
		if mr.Final != nil && len(s.step) > 0 {
			s.valStep = append(s.valStep, s.step[len(s.step)-1])
			s.pass1 = append(s.pass1, 100*mr.Final.Pass1)
			s.passK = append(s.passK, 100*mr.Final.PassK)
		}
	}
	type plotSpec struct {
		file, title, y string
		lines          func(m string, s *series) map[string][2][]float64
	}
	specs := []plotSpec{
		{"success.png", "Validation success vs PPO step", "%", func(m string, s *series) map[string][2][]float64 {
			return map[string][2][]float64{m + " Pass@1": {s.valStep, s.pass1}, m + " Pass@k": {s.valStep, s.passK}}
		}},
		{"reward.png", "Training reward vs PPO step", "mean episode reward", func(m string, s *series) map[string][2][]float64 {
			return map[string][2][]float64{m: {s.step, s.reward}}
		}},
		{"losses.png", "Losses vs PPO step", "loss", func(m string, s *series) map[string][2][]float64 {
			return map[string][2][]float64{m + " policy": {s.step, s.pg}, m + " value": {s.step, s.vf}}
		}},
	}
	for _, sp := range specs {
		pl := plot.New()
		pl.Title.Text, pl.X.Label.Text, pl.Y.Label.Text = sp.title, "PPO step", sp.y
		i := 0
		for _, m := range p.cfg.Run.Methods {
			s := ser[m]
			if s == nil {
				continue
			}
			lines := sp.lines(m, s)
			for _, name := range sortedKeys(lines) {
				xy := lines[name]
				if len(xy[0]) == 0 {
					continue
				}
				pts := make(plotter.XYs, len(xy[0]))
				for j := range pts {
					pts[j].X, pts[j].Y = xy[0][j], xy[1][j]
				}
				line, points, err := plotter.NewLinePoints(pts)
				if err != nil {
					return nil, err
				}
				c := plotutil.Color(i)
				line.Color, points.Color = c, c
				if strings.HasSuffix(name, "Pass@k") || strings.HasSuffix(name, "value") {
					line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				}
				points.Shape = plotutil.Shape(i)
				pl.Add(line, points)
				pl.Legend.Add(name, line, points)
				i++
			}
		}
		pl.Legend.Top = true
		pl.Add(plotter.NewGrid())
		path := filepath.Join(p.o.Dir, sp.file)
		if err := pl.Save(7*vg.Inch, 4*vg.Inch, path); err != nil {
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

func sortedKeys(m map[string][2][]float64) []string { return slices.Sorted(maps.Keys(m)) }

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

// Table is the report's results table in Markdown.
func (r *Report) Table() string {
	var b strings.Builder
	k := 0
	for _, m := range r.Methods {
		if m.Final != nil {
			k = m.Final.K
		}
	}
	fmt.Fprintf(&b, "| method | policy | Pass@1 %% | Pass@%d %% | mean reward | state perplexity |\n|---|---|---|---|---|---|\n", k)
	for _, m := range r.Methods {
		rows := []struct {
			label string
			e     *Eval
		}{{"untrained (as initialised)", m.Init}, {"base (format warm-up only)", m.Base}, {"after world-model SFT", m.Start}, {"after PPO", m.Final}}
		for _, row := range rows {
			if row.e == nil {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", m.Method, row.label,
				pct(row.e, func(e *Eval) float64 { return e.Pass1 }), pct(row.e, func(e *Eval) float64 { return e.PassK }),
				num(row.e, func(e *Eval) float64 { return e.MeanReward }, "%.3f"), num(row.e, func(e *Eval) float64 { return e.StatePPL }, "%.2f"))
		}
	}
	return b.String()
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
	puzzles, k := c.Run.ValPuzzles, c.Run.ValK
	fmt.Fprintf(&b, "Validation: %d fixed puzzles (seeds 0..%d) x %d samples at temperature %g, base prompt; Pass@1 is the mean success, Pass@%d the share of puzzles solved at least once. State perplexity is that of the true states inside world-model turns on validation puzzles. PPO: %d steps of %d groups x %d episodes on training seeds from %d.\n\n",
		puzzles, puzzles-1, k, c.Rollout.Temperature, k, c.Learner.PPO.Steps, c.Rollout.Groups, c.Rollout.GroupSize, trainSeedBase)
	b.WriteString(r.Table())
	b.WriteString("\n")
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
