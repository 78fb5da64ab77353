package model

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

var updateSpaFixture = flag.Bool("update-spa-fixture", false, "rewrite testdata/hf/spa-tiny")

type hfInputs struct {
	IDs  [][]int `json:"ids"`
	Mask [][]int `json:"attention_mask"`
}

func loadHFInputs(t *testing.T) hfInputs {
	data, err := os.ReadFile("testdata/hf/inputs.json")
	if err != nil {
		t.Fatal(err)
	}
	var in hfInputs
	if err := json.Unmarshal(data, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// paddedLogits runs the fixture's padded batch and returns logits [B][T][V] (padding rows too).
func paddedLogits(t *testing.T, m *Model, in hfInputs) [][][]float32 {
	valid := make([][]bool, len(in.Mask))
	for b, row := range in.Mask {
		for _, v := range row {
			valid[b] = append(valid[b], v == 1)
		}
	}
	inputs, err := MakeInputs(in.IDs, valid, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer inputs.Drop()
	var out [][][]float32
	ts.NoGrad(func() {
		h, err := m.Forward(inputs, nil)
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(h)
		h.MustDrop()
		p := ParamOf(lg)
		lg.MustDrop()
		B, T, V := p.Shape[0], p.Shape[1], p.Shape[2]
		for b := range B {
			var rows [][]float32
			for i := range T {
				rows = append(rows, p.Data[(b*T+i)*V:(b*T+i+1)*V])
			}
			out = append(out, rows)
		}
	})
	return out
}

// TestHuggingFaceParity loads tiny random checkpoints saved by transformers (testdata/hf/
// make_fixture.py) and requires their logits, and 32 greedily generated tokens, as transformers
// computed them: one untied, with grouped-query attention, q/k/v biases, rope_theta 1e6 and
// rms_norm_eps 1e-5; one with tied embeddings.
func TestHuggingFaceParity(t *testing.T) {
	lockThread(t)
	for _, name := range []string{"qwen2-tiny", "qwen2-tiny-tied"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", "hf", name)
			data, err := os.ReadFile(filepath.Join(dir, "logits.json"))
			if err != nil {
				t.Skipf("no transformers fixture in %s: run testdata/hf/make_fixture.py where transformers is installed", dir)
			}
			var fx struct {
				Inputs hfInputs      `json:"inputs"`
				Logits [][][]float64 `json:"logits"`
				Prompt []int         `json:"prompt"`
				Greedy []int         `json:"greedy"`
			}
			if err := json.Unmarshal(data, &fx); err != nil {
				t.Fatal(err)
			}
			m, err := Load(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got := paddedLogits(t, m, fx.Inputs)
			worst := 0.0
			for b := range got {
				for i := range got[b] {
					if fx.Inputs.Mask[b][i] == 0 {
						continue
					}
					for v := range got[b][i] {
						worst = max(worst, abs(float64(got[b][i][v])-fx.Logits[b][i][v]))
					}
				}
			}
			t.Logf("max |spa - transformers| logit difference: %.2e", worst)
			if worst > 1e-4 {
				t.Errorf("spa and transformers differ by %.2e", worst)
			}
			// Greedy generation, recomputing the whole sequence each step.
			seq := append([]int(nil), fx.Prompt...)
			for range fx.Greedy {
				last := logitsOf(t, m, [][]int{seq})[0]
				row := last[len(last)-1]
				best := 0
				for v := range row {
					if row[v] > row[best] {
						best = v
					}
				}
				seq = append(seq, best)
			}
			if gen := seq[len(fx.Prompt):]; fmt.Sprint(gen) != fmt.Sprint(fx.Greedy) || len(fx.Greedy) != 32 {
				t.Errorf("greedy tokens\nspa          %v\ntransformers %v", gen, fx.Greedy)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestSpaFixtureIsCurrent keeps testdata/hf/spa-tiny (a spa-written checkpoint and its logits,
// which make_fixture.py loads in transformers) in step with the code: the stored logits must be
// what spa computes now. -update-spa-fixture rewrites it.
func TestSpaFixtureIsCurrent(t *testing.T) {
	lockThread(t)
	dir := "testdata/hf/spa-tiny"
	in := loadHFInputs(t)
	if *updateSpaFixture {
		m := newTestModel(t, testConfig(false), 42)
		os.RemoveAll(dir)
		if err := Save(dir, m, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(map[string]any{"inputs": in, "logits": paddedLogits(t, m, in)})
		if err := os.WriteFile(filepath.Join(dir, "spa_logits.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Load(dir, Options{})
	if err != nil {
		t.Fatalf("%v (run go test ./model -run SpaFixture -update-spa-fixture)", err)
	}
	defer m.Close()
	requireStoredLogits(t, m, in, filepath.Join(dir, "spa_logits.json"))
}

// requireStoredLogits fails when m's logits for in differ from the ones a fixture stored: the
// fixture is stale and must be rewritten with -update-spa-fixture.
func requireStoredLogits(t *testing.T, m *Model, in hfInputs, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Logits [][][]float32 `json:"logits"`
	}
	if err := json.Unmarshal(data, &fx); err != nil {
		t.Fatal(err)
	}
	got := paddedLogits(t, m, in)
	for b := range got {
		for i := range got[b] {
			if in.Mask[b][i] == 1 {
				if d := maxDiff(got[b][i], fx.Logits[b][i]); d > 1e-5 {
					t.Fatalf("%s is stale by %.2e (run go test ./model -run Fixture -update-spa-fixture)", path, d)
				}
			}
		}
	}
}
