package harness

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spa-rl/spa/config"
)

// A summary puts runs of one configuration side by side, usually the same preset with different
// run.seed: one run's intervals say how sure its numbers are about its own puzzles, not how much
// a second seed would move them.

// summaryRun is one finished run, as its directory records it.
type summaryRun struct {
	dir    string
	cfg    config.Config
	report Report
}

// Summarize reads finished run directories and returns, in Markdown, the mean ± sd over runs of
// each method's evaluations and each run's paired differences with their intervals. The runs must
// share the environment, the methods and the validation puzzles; anything else (the seed, a
// hyperparameter under test) may differ, and the header names what does.
func Summarize(dirs []string) (string, error) {
	if len(dirs) == 0 {
		return "", fmt.Errorf("summarize: no run directories")
	}
	runs := make([]summaryRun, 0, len(dirs))
	for _, dir := range dirs {
		r, err := loadSummaryRun(dir)
		if err != nil {
			return "", err
		}
		if len(runs) > 0 {
			if err := sameComparison(runs[0], r); err != nil {
				return "", err
			}
		}
		runs = append(runs, r)
	}
	var b strings.Builder
	first := runs[0].cfg
	labels := runLabels(runs)
	fmt.Fprintf(&b, "%d runs of %s (preset %s; %s); validation on puzzles %d..%d x %d samples. Mean ± sd over runs (sample sd).\n\n",
		len(runs), first.Env.Name, first.Run.Preset, strings.Join(labels, ", "), first.Run.ValSeed, first.Run.ValSeed+first.Run.ValPuzzles-1, first.Run.ValK)
	if diff := differingKeys(runs); len(diff) > 0 {
		fmt.Fprintf(&b, "The runs differ in: %s.\n\n", strings.Join(diff, ", "))
	}
	k := first.Run.ValK
	fmt.Fprintf(&b, "| method | policy | Pass@1 %% | Pass@%d %% | greedy Pass@1 %% | actions per episode | format errors %% | first move from the state, bits above chance |\n|---|---|---|---|---|---|---|---|\n", k)
	for i, m := range runs[0].report.Methods {
		for _, row := range []struct {
			label string
			eval  func(MethodResult) *Eval
		}{
			{"base (format warm-up only)", func(r MethodResult) *Eval { return r.Base }},
			{"after world-model SFT", func(r MethodResult) *Eval { return r.Start }},
			{"after PPO", func(r MethodResult) *Eval { return r.Final }},
		} {
			var evals []*Eval
			for _, r := range runs {
				if e := row.eval(r.report.Methods[i]); e != nil {
					evals = append(evals, e)
				}
			}
			if len(evals) == 0 {
				continue
			}
			col := func(f func(*Eval) float64) string {
				x := make([]float64, len(evals))
				for j, e := range evals {
					x[j] = f(e)
				}
				return meanSD(x)
			}
			info := "–"
			if !slices.ContainsFunc(evals, func(e *Eval) bool { return !e.hasActionInfo() }) {
				x := make([]float64, len(evals))
				for j, e := range evals {
					x[j] = e.ActionInfo - e.ActionInfoChance
				}
				below := 0
				for _, e := range evals {
					if e.ActionInfoP > 0 && e.ActionInfoP < 0.05 {
						below++
					}
				}
				info = fmt.Sprintf("%s (p < 0.05 in %d of %d)", meanSDf(x, "%+.3f"), below, len(evals))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m.Method, row.label,
				col(func(e *Eval) float64 { return 100 * e.Pass1 }), col(func(e *Eval) float64 { return 100 * e.PassK }),
				col(func(e *Eval) float64 { return 100 * e.Greedy }), col(func(e *Eval) float64 { return e.MeanActions }),
				col(func(e *Eval) float64 { return 100 * e.FormatErrors }), info)
		}
	}
	fmt.Fprintf(&b, "\nPaired differences on the same puzzles, Pass@1 / Pass@%d in points, each run's with its 95%% interval; \"above 0\" counts the runs whose interval lies above 0.\n\n", k)
	b.WriteString("| comparison (same puzzles) |")
	for _, l := range labels {
		fmt.Fprintf(&b, " %s |", l)
	}
	b.WriteString(" mean ± sd | above 0 |\n|---|")
	b.WriteString(strings.Repeat("---|", len(labels)+2) + "\n")
	// Every run has the same methods, so the same comparisons in the same order.
	pairs := make([][]pair, len(runs))
	for j, r := range runs {
		pairs[j] = r.report.pairs()
	}
	for i, p := range pairs[0] {
		var cells []string
		var d1s, dKs []float64
		above1, aboveK := 0, 0
		for j, r := range runs {
			d1, dK, ok := pairs[j][i].diffs(uint64(r.cfg.Run.Seed))
			if !ok {
				cells = append(cells, "–")
				continue
			}
			cells = append(cells, points(d1)+" / "+points(dK))
			d1s, dKs = append(d1s, 100*d1.Diff), append(dKs, 100*dK.Diff)
			if d1.CI.Low > 0 {
				above1++
			}
			if dK.CI.Low > 0 {
				aboveK++
			}
		}
		if len(d1s) == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s / %s | %d / %d of %d |\n", p.label, strings.Join(cells, " | "), meanSDf(d1s, "%+.1f"), meanSDf(dKs, "%+.1f"), above1, aboveK, len(d1s))
	}
	return b.String(), nil
}

func loadSummaryRun(dir string) (summaryRun, error) {
	r := summaryRun{dir: dir}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return r, fmt.Errorf("summarize %s: %w (is it a run directory?)", dir, err)
	}
	if err := json.Unmarshal(data, &r.cfg); err != nil {
		return r, fmt.Errorf("summarize %s: config.json: %w", dir, err)
	}
	st, err := loadState(dir, true)
	if err != nil {
		return r, fmt.Errorf("summarize: %w", err)
	}
	r.report = Report{Env: r.cfg.Env.Name, Methods: st.methodResults(r.cfg.Run.Methods)}
	for _, m := range r.report.Methods {
		if m.Final == nil {
			return r, fmt.Errorf("summarize %s: %s has no evaluation after PPO yet (finish it with spa run --resume %s)", dir, m.Method, dir)
		}
	}
	return r, nil
}

// sameComparison refuses runs whose numbers do not compare: another environment, other methods,
// or other validation puzzles.
func sameComparison(a, b summaryRun) error {
	ca, cb := a.cfg, b.cfg
	for _, c := range []struct {
		what   string
		va, vb any
	}{
		{"env", ca.Env.Name + " " + ca.Env.Variant, cb.Env.Name + " " + cb.Env.Variant},
		{"run.methods", strings.Join(ca.Run.Methods, ","), strings.Join(cb.Run.Methods, ",")},
		{"run.val_seed", ca.Run.ValSeed, cb.Run.ValSeed},
		{"run.val_puzzles", ca.Run.ValPuzzles, cb.Run.ValPuzzles},
		{"run.val_k", ca.Run.ValK, cb.Run.ValK},
	} {
		if c.va != c.vb {
			return fmt.Errorf("summarize: %s and %s differ in %s (%v, %v); their numbers are not of the same puzzles and methods", a.dir, b.dir, c.what, c.va, c.vb)
		}
	}
	return nil
}

// runLabels names each run by its seed, or by its directory where seeds repeat.
func runLabels(runs []summaryRun) []string {
	labels := make([]string, len(runs))
	seeds := map[int]int{}
	for _, r := range runs {
		seeds[r.cfg.Run.Seed]++
	}
	for i, r := range runs {
		labels[i] = fmt.Sprintf("seed %d", r.cfg.Run.Seed)
		if seeds[r.cfg.Run.Seed] > 1 {
			labels[i] = filepath.Base(r.dir)
		}
	}
	return labels
}

// differingKeys lists the configuration keys (besides the run's id, directory and seed, and
// secrets) whose values differ between the runs, so a summary of a sweep says what was swept.
func differingKeys(runs []summaryRun) []string {
	var out []string
	for _, k := range config.Keys() {
		if k.Secret || k.Path == "run.id" || k.Path == "run.dir" || k.Path == "run.seed" {
			continue
		}
		v := fmt.Sprint(k.Value(runs[0].cfg))
		for _, r := range runs[1:] {
			if fmt.Sprint(k.Value(r.cfg)) != v {
				out = append(out, k.Path)
				break
			}
		}
	}
	return out
}

// meanSD formats the mean ± sample sd of x to one decimal; one value is printed alone.
func meanSD(x []float64) string { return meanSDf(x, "%.1f") }

// meanSDf is meanSD in another format ("%+.1f" for differences); the sd takes it without its sign.
func meanSDf(x []float64, format string) string {
	if len(x) == 1 {
		return fmt.Sprintf(format, x[0])
	}
	mean := 0.0
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	ss := 0.0
	for _, v := range x {
		ss += (v - mean) * (v - mean)
	}
	return fmt.Sprintf(format+" ± "+strings.Replace(format, "+", "", 1), mean, math.Sqrt(ss/float64(len(x)-1)))
}
