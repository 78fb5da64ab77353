package model

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestPEFTAdapterLoads loads a LoRA adapter that PEFT made on the transformers fixture
// (testdata/hf/qwen2-tiny-lora, by make_fixture.py) into spa and requires PEFT's logits.
func TestPEFTAdapterLoads(t *testing.T) {
	lockThread(t)
	dir := filepath.Join("testdata", "hf", "qwen2-tiny-lora")
	data, err := os.ReadFile(filepath.Join(dir, "logits.json"))
	if err != nil {
		t.Skipf("no PEFT fixture in %s: run testdata/hf/make_fixture.py where PEFT is installed", dir)
	}
	var fx struct {
		Inputs hfInputs      `json:"inputs"`
		Logits [][][]float64 `json:"logits"`
	}
	if err := json.Unmarshal(data, &fx); err != nil {
		t.Fatal(err)
	}
	var ac struct {
		R       int      `json:"r"`
		Alpha   float64  `json:"lora_alpha"`
		Targets []string `json:"target_modules"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &ac); err != nil {
		t.Fatal(err)
	}
	m, err := Load(filepath.Join("testdata", "hf", "qwen2-tiny"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.EnableLoRA(LoRAOptions{Rank: ac.R, Alpha: ac.Alpha, Targets: ac.Targets}); err != nil {
		t.Fatal(err)
	}
	if err := m.LoadAdapter(dir); err != nil {
		t.Fatal(err)
	}
	got := paddedLogits(t, m, fx.Inputs)
	worst := 0.0
	for b := range got {
		for i := range got[b] {
			if fx.Inputs.Mask[b][i] == 1 {
				for v := range got[b][i] {
					worst = max(worst, abs(float64(got[b][i][v])-fx.Logits[b][i][v]))
				}
			}
		}
	}
	t.Logf("PEFT adapter (r %d, alpha %g, %v): max |spa - PEFT| logit difference %.2e", ac.R, ac.Alpha, ac.Targets, worst)
	if worst > 1e-4 {
		t.Errorf("spa and PEFT differ by %.2e", worst)
	}
}

// TestSpaLoRAFixtureIsCurrent keeps testdata/hf/spa-lora (an adapter spa saved on spa-tiny, with
// the adapted logits, which make_fixture.py loads with PEFT) in step with the code;
// -update-spa-fixture rewrites it.
func TestSpaLoRAFixtureIsCurrent(t *testing.T) {
	lockThread(t)
	dir := filepath.Join("testdata", "hf", "spa-lora")
	in := loadHFInputs(t)
	m, err := Load(filepath.Join("testdata", "hf", "spa-tiny"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.EnableLoRA(LoRAOptions{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj", "down_proj"}}); err != nil {
		t.Fatal(err)
	}
	if *updateSpaFixture {
		trainAdapters(m)
		os.RemoveAll(dir)
		if err := m.SaveAdapter(dir); err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(map[string]any{"inputs": in, "logits": paddedLogits(t, m, in)})
		if err := os.WriteFile(filepath.Join(dir, "spa_logits.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.LoadAdapter(dir); err != nil {
		t.Fatalf("%v (run go test ./model -run SpaLoRA -update-spa-fixture)", err)
	}
	requireStoredLogits(t, m, in, filepath.Join(dir, "spa_logits.json"))
}
