package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nlpodyssey/safetensors"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/torchrt"
)

func TestMain(m *testing.M) { torchrt.RunTests(m) }

// lockThread keeps a test's torch work on one OS thread: libtorch's grad mode is per thread, and
// each test runs on its own goroutine.
func lockThread(t *testing.T) {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
}

// testConfig is small enough for float64 reference loops, with grouped-query attention, untied
// head and biases that are not zero after training-like perturbation.
func testConfig(tied bool) Config {
	return Config{
		Architectures: []string{"Qwen2ForCausalLM"}, ModelType: "qwen2", VocabSize: 61, HiddenSize: 32,
		IntermediateSize: 48, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		MaxPositionEmbeddings: 64, RopeTheta: 10000, RMSNormEps: 1e-6, HiddenAct: "silu",
		InitializerRange: 0.2, TieWordEmbeddings: tied,
	}
}

// newTestModel makes a model whose biases and norms are random too, so that every parameter
// matters in the comparisons.
func newTestModel(t *testing.T, cfg Config, seed uint64) *Model {
	t.Helper()
	m, err := New(cfg, Options{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	params := m.Params()
	for name, p := range params {
		for i := range p.Data {
			if p.Data[i] == 0 || p.Data[i] == 1 { // biases and norm weights
				p.Data[i] += float32(math.Sin(float64(i)+float64(len(name)))) * 0.1
			}
		}
	}
	if err := m.SetParams(params); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// logitsOf runs a full forward of left-padded sequences and returns logits [B][T][V] for the
// real tokens only (padding positions are nil).
func logitsOf(t *testing.T, m *Model, seqs [][]int) [][][]float32 {
	t.Helper()
	T := 0
	for _, s := range seqs {
		T = max(T, len(s))
	}
	tokens := make([][]int, len(seqs))
	valid := make([][]bool, len(seqs))
	for b, s := range seqs {
		pad := T - len(s)
		tokens[b] = make([]int, T)
		valid[b] = make([]bool, T)
		for i := range T {
			if i >= pad {
				tokens[b][i], valid[b][i] = s[i-pad], true
			}
		}
	}
	in, err := MakeInputs(tokens, valid, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Drop()
	var out [][][]float32
	ts.NoGrad(func() {
		h, err := m.Forward(in, nil)
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(h)
		h.MustDrop()
		p := ParamOf(lg)
		lg.MustDrop()
		V := m.Config.VocabSize
		for b := range seqs {
			rows := make([][]float32, T)
			for i := range T {
				if valid[b][i] {
					rows[i] = p.Data[(b*T+i)*V : (b*T+i+1)*V]
				}
			}
			out = append(out, rows[T-len(seqs[b]):])
		}
	})
	return out
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

func TestMatchesFloat64Reference(t *testing.T) {
	lockThread(t)
	for _, tied := range []bool{true, false} {
		cfg := testConfig(tied)
		m := newTestModel(t, cfg, 1)
		ids := []int{3, 14, 15, 9, 26, 5, 35, 60, 0, 7, 7, 7}
		got := logitsOf(t, m, [][]int{ids})[0]
		want := refForward(cfg, m.Params(), ids)
		worst := 0.0
		for i := range ids {
			for v := range cfg.VocabSize {
				worst = math.Max(worst, math.Abs(float64(got[i][v])-want[i][v]))
			}
		}
		t.Logf("tied=%v: max |gotch f32 - reference f64| = %.2e over %d logits", tied, worst, len(ids)*cfg.VocabSize)
		if worst > 1e-4 {
			t.Errorf("tied=%v: gotch and the float64 reference differ by %.2e", tied, worst)
		}
	}
}

// TestPaddingDoesNotChangeLogits batches sequences of different lengths with left padding: each
// must get the logits it gets alone.
func TestPaddingDoesNotChangeLogits(t *testing.T) {
	lockThread(t)
	m := newTestModel(t, testConfig(true), 2)
	seqs := [][]int{{1, 2, 3, 4, 5, 6, 7}, {9, 8}, {4, 4, 4, 4}}
	batch := logitsOf(t, m, seqs)
	for b, s := range seqs {
		alone := logitsOf(t, m, [][]int{s})[0]
		for i := range s {
			if d := maxDiff(batch[b][i], alone[i]); d > 1e-5 {
				t.Fatalf("sequence %d token %d: batched differs from alone by %.2e", b, i, d)
			}
		}
	}
}

// TestCacheMatchesFullRecompute decodes a padded batch token by token with the KV cache and
// compares every step's logits with a full forward over the whole sequence.
func TestCacheMatchesFullRecompute(t *testing.T) {
	lockThread(t)
	m := newTestModel(t, testConfig(false), 3)
	prompts := [][]int{{5, 6, 7, 8, 9}, {10, 11}}
	next := [][]int{{1, 2, 3, 4}, {20, 21, 22, 23}}
	P := 5
	tokens := [][]int{{5, 6, 7, 8, 9}, {0, 0, 0, 10, 11}}
	valid := [][]bool{{true, true, true, true, true}, {false, false, false, true, true}}
	cache := m.NewCache()
	defer cache.Drop()
	worst := 0.0
	ts.NoGrad(func() {
		step := func(tok [][]int) []float32 {
			in, err := MakeInputs(tok, valid, gotch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Drop()
			h, err := m.Forward(in, cache)
			if err != nil {
				t.Fatal(err)
			}
			lg := m.Logits(h)
			h.MustDrop()
			last := lg.MustNarrow(1, int64(len(tok[0])-1), 1, true)
			defer last.MustDrop()
			return ParamOf(last).Data
		}
		got := step(tokens)
		for s := 0; ; s++ {
			V := m.Config.VocabSize
			for b := range prompts {
				full := append(append([]int{}, prompts[b]...), next[b][:s]...)
				want := logitsOf(t, m, [][]int{full})[0]
				worst = math.Max(worst, maxDiff(got[b*V:(b+1)*V], want[len(full)-1]))
			}
			if s == len(next[0]) {
				break
			}
			for b := range valid {
				valid[b] = append(valid[b], true)
			}
			got = step([][]int{{next[0][s]}, {next[1][s]}})
		}
	})
	t.Logf("max |cached - recomputed| logit difference over %d steps: %.2e", len(next[0])+1, worst)
	if worst > 1e-4 {
		t.Errorf("KV-cache decoding differs from recomputation by %.2e", worst)
	}
	if cache.Len != P+len(next[0]) {
		t.Errorf("cache holds %d positions, want %d", cache.Len, P+len(next[0]))
	}
}

func TestSaveLoadGivesIdenticalLogits(t *testing.T) {
	lockThread(t)
	for _, tied := range []bool{true, false} {
		cfg := testConfig(tied)
		eos := 60
		cfg.EOSTokenID = IDList{eos}
		m := newTestModel(t, cfg, 4)
		dir := t.TempDir()
		if err := Save(dir, m, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		back, err := Load(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer back.Close()
		ids := [][]int{{1, 2, 3, 4, 5, 6}}
		a, b := logitsOf(t, m, ids)[0], logitsOf(t, back, ids)[0]
		for i := range a {
			if d := maxDiff(a[i], b[i]); d != 0 {
				t.Fatalf("tied=%v: reloaded model differs by %.2e", tied, d)
			}
		}
		if back.Config.EOSTokenID[0] != eos || back.HasValueHead() {
			t.Errorf("config not preserved: %+v", back.Config)
		}
		// bfloat16 keeps 8 bits of mantissa: close, not equal.
		bdir := t.TempDir()
		if err := Save(bdir, m, SaveOptions{DType: "bfloat16"}); err != nil {
			t.Fatal(err)
		}
		half, err := Load(bdir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		c := logitsOf(t, half, ids)[0]
		half.Close()
		if d := maxDiff(a[0], c[0]); d == 0 || d > 0.1 {
			t.Errorf("bfloat16 round trip differs by %.2e", d)
		}
	}
}

func TestLoadRefusesMismatchedWeights(t *testing.T) {
	lockThread(t)
	m := newTestModel(t, testConfig(true), 5)
	dir := t.TempDir()
	if err := Save(dir, m, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(true)
	cfg.IntermediateSize = 40
	if err := SaveConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, Options{}); err == nil || !containsAll(err.Error(), "mismatched", "mlp.gate_proj.weight") {
		t.Errorf("load with a wrong intermediate_size: %v", err)
	}
	cfg = testConfig(true)
	cfg.NumAttentionHeads = 5
	if err := SaveConfig(dir, cfg); err == nil {
		if _, err := Load(dir, Options{}); err == nil || !containsAll(err.Error(), "not a multiple") {
			t.Errorf("load with 5 heads: %v", err)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// TestTinyModelLearnsASequenceTask trains from scratch on "continue the arithmetic sequence"
// (next = previous + step mod vocab) and requires near-perfect next-token accuracy.
func TestTinyModelLearnsASequenceTask(t *testing.T) {
	lockThread(t)
	cfg := testConfig(true)
	cfg.InitializerRange = 0.02
	m, err := New(cfg, Options{Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	opt, err := nn.DefaultAdamWConfig().Build(m.VarStore(), 3e-3)
	if err != nil {
		t.Fatal(err)
	}
	V := cfg.VocabSize
	batch := func(seed int) ([][]int, [][]bool) {
		var toks [][]int
		var valid [][]bool
		for b := range 16 {
			start, step := (seed*7+b*13)%V, 1+(seed+b)%3
			s := make([]int, 12)
			for i := range s {
				s[i] = (start + i*step) % V
			}
			toks = append(toks, s)
			valid = append(valid, []bool{true, true, true, true, true, true, true, true, true, true, true, true})
		}
		return toks, valid
	}
	lossAndAcc := func(toks [][]int, valid [][]bool, train bool) (float64, float64) {
		in, err := MakeInputs(toks, valid, gotch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Drop()
		h, err := m.Forward(in, nil)
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(h)
		h.MustDrop()
		B, T := int64(len(toks)), int64(len(toks[0]))
		// Predict tokens 3..T-1 from their prefixes (two tokens fix start and step).
		pred := lg.MustNarrow(1, 2, T-3, true).MustContiguous(true).MustView([]int64{-1, int64(V)}, true)
		var tgt []int64
		for _, s := range toks {
			for _, x := range s[3:] {
				tgt = append(tgt, int64(x))
			}
		}
		target := ts.MustOfSlice(tgt)
		loss := pred.MustCrossEntropyLoss(target, ts.NewTensor(), 1, -100, 0, false)
		am := pred.MustArgmax([]int64{-1}, false, false)
		hits := 0
		for i, v := range am.Int64Values() {
			if v == tgt[i] {
				hits++
			}
		}
		am.MustDrop()
		l := loss.Float64Values()[0]
		if train {
			if err := opt.BackwardStep(loss); err != nil {
				t.Fatal(err)
			}
		}
		loss.MustDrop()
		pred.MustDrop()
		target.MustDrop()
		return l, float64(hits) / float64(B*(T-3))
	}
	var loss, acc float64
	for step := range 300 {
		toks, valid := batch(step)
		loss, acc = lossAndAcc(toks, valid, true)
	}
	var evalAcc float64
	ts.NoGrad(func() {
		toks, valid := batch(100_000)
		_, evalAcc = lossAndAcc(toks, valid, false)
	})
	t.Logf("after 300 steps: train loss %.3f, train accuracy %.2f, held-out accuracy %.2f", loss, acc, evalAcc)
	if evalAcc < 0.9 {
		t.Errorf("held-out next-token accuracy %.2f after training, want >= 0.9", evalAcc)
	}
}

// TestLoadsShardedCheckpoints splits a saved checkpoint into two shards with an index, as large
// Hugging Face checkpoints are stored, and requires the same logits.
func TestLoadsShardedCheckpoints(t *testing.T) {
	lockThread(t)
	m := newTestModel(t, testConfig(false), 8)
	dir := t.TempDir()
	if err := Save(dir, m, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	params, err := ReadSafetensors(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "model.safetensors"))
	shards := []map[string]safetensors.TensorView{{}, {}}
	index := map[string]string{}
	i := 0
	for name, p := range params {
		shape := make([]uint64, len(p.Shape))
		for j, s := range p.Shape {
			shape[j] = uint64(s)
		}
		// The second shard stores float16, which loading must widen.
		dt := safetensors.F32
		data := encodeFloats(p.Data, dt)
		if i%2 == 1 {
			dt = safetensors.F16
			data = make([]byte, 2*len(p.Data))
			for k, f := range p.Data {
				binary.LittleEndian.PutUint16(data[2*k:], float32ToFloat16(f))
			}
		}
		v, err := safetensors.NewTensorView(dt, shape, data)
		if err != nil {
			t.Fatal(err)
		}
		shards[i%2][name] = v
		index[name] = fmt.Sprintf("model-%05d-of-00002.safetensors", i%2+1)
		i++
	}
	for k, sh := range shards {
		data, err := safetensors.Serialize(sh, nil)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("model-%05d-of-00002.safetensors", k+1)), data, 0o644)
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": index})
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
	back, err := Load(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	ids := [][]int{{3, 1, 4, 1, 5}}
	a, b := logitsOf(t, m, ids)[0], logitsOf(t, back, ids)[0]
	if d := maxDiff(a[4], b[4]); d > 0.05 {
		t.Errorf("sharded float16 checkpoint differs by %.2e", d)
	}
}

// float32ToFloat16 rounds to nearest for normal values, enough for test weights.
func float32ToFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int((b>>23)&0xFF) - 127 + 15
	mant := b & 0x7FFFFF
	if exp <= 0 {
		return sign
	}
	return sign | uint16(exp)<<10 | uint16((mant+0x1000)>>13)
}

func TestBF16Rounding(t *testing.T) {
	if got := float32ToBF16(1.00390625); got != 0x3F80 { // halfway: rounds to even
		t.Errorf("bf16(1.00390625) = %#04x", got)
	}
}

// TestQwen25ConfigLoads reads the config.json layout of Qwen2.5-0.5B-Instruct (fields as
// published) and checks what the model derives from it.
func TestQwen25ConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("testdata/qwen2.5-0.5b")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HeadDim() != 64 || cfg.NumKeyValueHeads != 2 || !cfg.TieWordEmbeddings || cfg.RopeTheta != 1e6 ||
		len(cfg.EOSTokenID) != 1 || cfg.EOSTokenID[0] != 151645 || *cfg.BOSTokenID != 151643 {
		t.Errorf("derived %+v", cfg)
	}
	for name, spoil := range map[string]string{
		`"use_sliding_window": false`: `"use_sliding_window": true`,
		`"hidden_act": "silu"`:        `"hidden_act": "gelu"`,
		`"model_type": "qwen2"`:       `"model_type": "llama"`,
		`"use_cache": true`:           `"use_cache": true, "rope_scaling": {"type": "yarn", "factor": 4}`,
	} {
		dir := t.TempDir()
		data, _ := os.ReadFile("testdata/qwen2.5-0.5b/config.json")
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(strings.Replace(string(data), name, spoil, 1)), 0o644)
		if _, err := LoadConfig(dir); err == nil {
			t.Errorf("config with %s loaded", spoil)
		}
	}
}

func TestIDListForms(t *testing.T) {
	for in, want := range map[string]string{`7`: `7`, `[151645,151643]`: `[151645,151643]`, `[3]`: `3`} {
		var l IDList
		if err := json.Unmarshal([]byte(in), &l); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		out, _ := json.Marshal(l)
		if string(out) != want {
			t.Errorf("%s -> %s, want %s", in, out, want)
		}
	}
	var l IDList
	if err := json.Unmarshal([]byte(`"x"`), &l); err == nil {
		t.Error("a string was accepted as token ids")
	}
}

// TestPresetsMatchTheirShapes: the qwen2.5-0.5b preset has the published config's shapes and its
// 494,032,768 parameters, and Config.NumParams counts what a model really has.
func TestPresetsMatchTheirShapes(t *testing.T) {
	published, err := LoadConfig("testdata/qwen2.5-0.5b")
	if err != nil {
		t.Fatal(err)
	}
	q, err := Preset("qwen2.5-0.5b", 151665)
	if err != nil {
		t.Fatal(err)
	}
	type shape struct {
		V, H, I, L, A, KV, Pos int
		Rope                   float64
		Tied                   bool
	}
	of := func(c Config) shape {
		return shape{c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings, c.RopeTheta, c.TieWordEmbeddings}
	}
	if of(q) != of(published) {
		t.Errorf("qwen2.5-0.5b preset %+v, published %+v", of(q), of(published))
	}
	if n := q.NumParams(); n != 494_032_768 {
		t.Errorf("qwen2.5-0.5b: %d parameters, Qwen publishes 494,032,768", n)
	}
	for _, name := range []string{"tiny", "small"} {
		for _, tied := range []bool{true, false} {
			cfg, err := Preset(name, 300)
			if err != nil {
				t.Fatal(err)
			}
			cfg.TieWordEmbeddings = tied
			m, err := New(cfg, Options{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := cfg.NumParams(), m.NumParams(); got != want {
				t.Errorf("%s (tied %v): Config.NumParams %d, the model has %d", name, tied, got, want)
			}
			m.Close()
		}
	}
}

// TestInitWithAGivenTokenizer makes a checkpoint around Qwen's tokenizer (the shared testdata's
// Qwen3 one) instead of the domain tokenizer: the files are copied, the vocabulary is the
// tokenizer's, and turns end with <|im_end|> and <|endoftext|>.
func TestInitWithAGivenTokenizer(t *testing.T) {
	const qwen = "../../shared/testdata/tokenizer/qwen3"
	if _, err := os.Stat(filepath.Join(qwen, "tokenizer.json")); err != nil {
		t.Skipf("the shared Qwen tokenizer is missing (%v); it lives beside the repository in shared/testdata", err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	cfg, params, err := Init(dir, InitOptions{Preset: "tiny", TokenizerDir: qwen, Seed: 1, DType: "bfloat16"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(qwen, "tokenizer.json"))
	got, _ := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if !bytes.Equal(got, want) {
		t.Error("tokenizer.json was not copied byte for byte")
	}
	loaded, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.VocabSize < 151643 || params != cfg.NumParams() || fmt.Sprint(loaded.EOSTokenID) != "[151645 151643]" {
		t.Errorf("vocab %d, %d parameters (config says %d), eos %v", loaded.VocabSize, params, cfg.NumParams(), loaded.EOSTokenID)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		t.Error(err)
	}
	if _, _, err := Init(filepath.Join(t.TempDir(), "x"), InitOptions{TokenizerDir: t.TempDir()}); err == nil {
		t.Error("a directory without a tokenizer was accepted")
	}
}

func TestParseDevice(t *testing.T) {
	info, err := torchrt.ReadInfo()
	if err != nil {
		t.Fatal(err)
	}
	// Without a GPU, asking for one names the reason: the build, or the machine.
	noGPU := "this libtorch is CPU-only"
	if info.CUDA {
		noGPU = "sees no GPU"
	}
	for _, tc := range []struct{ in, err string }{
		{"", ""}, {"cpu", ""}, {"tpu", "want cpu, cuda or cuda:N"},
		{"cuda", noGPU}, {"cuda:0", noGPU},
	} {
		if info.GPUs > 0 && strings.HasPrefix(tc.in, "cuda") {
			tc.err = ""
		}
		d, err := ParseDevice(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseDevice(%q): %v", tc.in, err)
		case tc.err == "" && tc.in != "" && !strings.HasPrefix(tc.in, "cuda") && d.Name != gotch.CPU.Name:
			t.Errorf("ParseDevice(%q) = %+v, want the CPU", tc.in, d)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseDevice(%q) = %v, want an error saying %q", tc.in, err, tc.err)
		}
	}
}
