package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"
	"github.com/sugarme/gotch/ts"
)

func flatLogits(t *testing.T, m *Model, seqs [][]int) []float32 {
	var out []float32
	for _, rows := range logitsOf(t, m, seqs) {
		for _, r := range rows {
			out = append(out, r...)
		}
	}
	return out
}

// TestLoRAMergesSavesAndLoads checks the adapter algebra against independent paths: a fresh
// adapter changes nothing (B = 0); a trained one equals the merged weights saved as a plain
// checkpoint; the PEFT files round-trip and are named as PEFT names them; gradients reach only
// the adapters.
func TestLoRAMergesSavesAndLoads(t *testing.T) {
	lockThread(t)
	cfg := testConfig(false)
	seqs := [][]int{{1, 5, 9, 2, 7}, {3, 4}}
	m := newTestModel(t, cfg, 3)
	base := flatLogits(t, m, seqs)
	targets := []string{"q_proj", "v_proj", "down_proj"}
	if err := m.EnableLoRA(LoRAOptions{Rank: 4, Alpha: 8, Targets: targets, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(base, flatLogits(t, m, seqs)); d != 0 {
		t.Fatalf("a fresh adapter changed the logits by %g", d)
	}
	if err := m.EnableLoRA(LoRAOptions{Rank: 4, Alpha: 8, Targets: targets}); err == nil {
		t.Error("enabling LoRA twice succeeded")
	}

	// Gradients reach the adapters only.
	in, _ := MakeInputs([][]int{seqs[0]}, [][]bool{{true, true, true, true, true}}, m.Device())
	h, _ := m.Forward(in, nil)
	lg := m.Logits(h)
	s := lg.MustSum(lg.DType(), false)
	s.MustBackward()
	for name, v := range m.vs.Variables() {
		g := v.MustGrad(false)
		if g.MustDefined() {
			t.Errorf("frozen base weight %s got a gradient", name)
		}
		g.MustDrop()
	}
	got := 0
	for name, v := range m.TrainableVarStore().Variables() {
		g := v.MustGrad(false)
		if !g.MustDefined() {
			t.Errorf("adapter %s got no gradient", name)
		} else {
			got++
		}
		g.MustDrop()
	}
	if want := 2 * len(targets) * cfg.NumHiddenLayers; got != want {
		t.Errorf("%d adapters with gradients, want %d", got, want)
	}
	for _, x := range []*ts.Tensor{s, lg, h} {
		x.MustDrop()
	}
	in.Drop()

	trainAdapters(m)
	adapted := flatLogits(t, m, seqs)
	if maxDiff(base, adapted) < 1e-3 {
		t.Fatal("a trained adapter did not change the logits")
	}

	dir := t.TempDir()
	if err := Save(dir, m, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	merged, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer merged.Close()
	if d := maxDiff(adapted, flatLogits(t, merged, seqs)); d > 1e-5 {
		t.Errorf("merged checkpoint differs from the adapted model by %g", d)
	}

	adir := filepath.Join(dir, "adapter")
	if err := m.SaveAdapter(adir); err != nil {
		t.Fatal(err)
	}
	var ac struct {
		PeftType string   `json:"peft_type"`
		R        int      `json:"r"`
		Alpha    float64  `json:"lora_alpha"`
		Targets  []string `json:"target_modules"`
	}
	data, _ := os.ReadFile(filepath.Join(adir, "adapter_config.json"))
	if err := json.Unmarshal(data, &ac); err != nil || ac.PeftType != "LORA" || ac.R != 4 || ac.Alpha != 8 || !slices.Equal(ac.Targets, targets) {
		t.Errorf("adapter_config.json: %+v %v", ac, err)
	}
	raw, _ := os.ReadFile(filepath.Join(adir, "adapter_model.safetensors"))
	st, err := safetensors.Deserialize(raw)
	if err != nil {
		t.Fatal(err)
	}
	names := st.Names()
	if !slices.Contains(names, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight") ||
		!slices.Contains(names, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") {
		t.Errorf("adapter tensor names are not PEFT's: %v", names)
	}
	for _, n := range names {
		if v, _ := st.Tensor(n); strings.HasSuffix(n, "lora_A.weight") && v.Shape()[0] != 4 {
			t.Errorf("%s has shape %v, want [rank, in]", n, v.Shape())
		}
	}

	again := newTestModel(t, cfg, 3)
	if err := again.EnableLoRA(LoRAOptions{Rank: 4, Alpha: 8, Targets: targets, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	if err := again.LoadAdapter(adir); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(adapted, flatLogits(t, again, seqs)); d != 0 {
		t.Errorf("reloaded adapter differs by %g", d)
	}
	if err := m.EnableLoRA(LoRAOptions{Rank: 0}); err == nil {
		t.Error("rank 0 accepted")
	}
	fresh := newTestModel(t, cfg, 3)
	if err := fresh.EnableLoRA(LoRAOptions{Rank: 2, Alpha: 1, Targets: []string{"qproj"}}); err == nil || !strings.Contains(err.Error(), "unknown target") {
		t.Errorf("bad target: %v", err)
	}
}

// trainAdapters gives every adapter weight (A and B) a value, as training would leave them.
func trainAdapters(m *Model) {
	i := 0
	for _, v := range m.TrainableVarStore().Variables() {
		p := ParamOf(&v)
		for j := range p.Data {
			p.Data[j] = float32(math.Sin(float64(i*31+j))) * 0.3
		}
		src := p.Tensor()
		dst := v
		ts.NoGrad(func() { dst.Copy_(src) })
		src.MustDrop()
		i++
	}
}
