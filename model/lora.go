package model

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nlpodyssey/safetensors"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/model/weights"
)

// LoRAOptions configure low-rank adapters (Hu et al. 2021): each target projection W gets
// y = xWᵀ + (alpha/rank)·x Aᵀ Bᵀ with A [rank, in] and B [out, rank], B starting at zero so the
// adapted model starts equal to the base.
type LoRAOptions struct {
	Rank  int
	Alpha float64
	// Targets are module names as PEFT writes them: q_proj, k_proj, v_proj, o_proj, gate_proj,
	// up_proj, down_proj.
	Targets []string
	Seed    uint64
}

// LoRATargets are the projections that can carry adapters.
var LoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

type lora struct {
	opts  LoRAOptions
	scale float64
	vs    *nn.VarStore
	// a and b are keyed by module path ("model.layers.0.self_attn.q_proj").
	a, b map[string]*ts.Tensor
}

// modulePath is a projection's Hugging Face module path.
func modulePath(layer int, target string) string {
	group := "self_attn."
	if target == "gate_proj" || target == "up_proj" || target == "down_proj" {
		group = "mlp."
	}
	return "model.layers." + strconv.Itoa(layer) + "." + group + target
}

// EnableLoRA freezes the base weights and adds trainable adapters. Training then updates only
// the adapters (LoRAVarStore); Save writes the merged weights and SaveAdapter the PEFT adapter.
func (m *Model) EnableLoRA(o LoRAOptions) error {
	if m.lora != nil {
		return fmt.Errorf("lora: already enabled")
	}
	if o.Rank <= 0 || o.Alpha <= 0 || len(o.Targets) == 0 {
		return fmt.Errorf("lora: rank %d and alpha %g must be positive, with at least one target", o.Rank, o.Alpha)
	}
	for _, t := range o.Targets {
		if !slices.Contains(LoRATargets, t) {
			return fmt.Errorf("lora: unknown target %q (want %s)", t, strings.Join(LoRATargets, ", "))
		}
	}
	if err := m.vs.Freeze(); err != nil {
		return fmt.Errorf("lora: %w", err)
	}
	l := &lora{opts: o, scale: o.Alpha / float64(o.Rank), vs: nn.NewVarStore(m.device), a: map[string]*ts.Tensor{}, b: map[string]*ts.Tensor{}}
	rng := rand.New(rand.NewPCG(o.Seed, 0x4c6f5241))
	vars := m.vs.Variables()
	for i := range m.layers {
		for _, t := range o.Targets {
			path := modulePath(i, t)
			w := vars[path+".weight"]
			size := w.MustSize()
			out, in := size[0], size[1]
			// PEFT's default: A ~ kaiming_uniform(a=√5), i.e. U(−1/√in, 1/√in); B = 0.
			bound := 1 / math.Sqrt(float64(in))
			a := make([]float32, int(o.Rank)*int(in))
			for j := range a {
				a[j] = float32((2*rng.Float64() - 1) * bound)
			}
			var err error
			if l.a[path], err = addVar(l.vs, m.device, path+".lora_A.weight", a, []int64{int64(o.Rank), in}); err != nil {
				return fmt.Errorf("lora: %w", err)
			}
			if l.b[path], err = addVar(l.vs, m.device, path+".lora_B.weight", make([]float32, int(out)*o.Rank), []int64{out, int64(o.Rank)}); err != nil {
				return fmt.Errorf("lora: %w", err)
			}
		}
	}
	m.lora = l
	return nil
}

// LoRA returns the adapter settings, or nil when the model has no adapters.
func (m *Model) LoRA() *LoRAOptions {
	if m.lora == nil {
		return nil
	}
	o := m.lora.opts
	return &o
}

// TrainableVarStore is what an optimiser should update: the adapters with LoRA, else every weight.
func (m *Model) TrainableVarStore() *nn.VarStore {
	if m.lora != nil {
		return m.lora.vs
	}
	return m.vs
}

// proj is a projection of layer's module target: linear(x, w, b), plus the adapter's low-rank
// update when there is one.
func (m *Model) proj(layer int, target string, x, w, b *ts.Tensor) *ts.Tensor {
	y := linear(x, w, b)
	if m.lora == nil {
		return y
	}
	path := modulePath(layer, target)
	a, ok := m.lora.a[path]
	if !ok {
		return y
	}
	xa := linear(x, a, nil)
	d := linear(xa, m.lora.b[path], nil).MustMulScalar(ts.FloatScalar(m.lora.scale), true)
	xa.MustDrop()
	y = y.MustAdd(d, true)
	d.MustDrop()
	return y
}

// mergedParams is Params with every adapter folded in: W + scale·B·A.
func (m *Model) mergedParams() map[string]Param {
	params := m.Params()
	if m.lora == nil {
		return params
	}
	for path, a := range m.lora.a {
		var merged Param
		ts.NoGrad(func() {
			ba := m.lora.b[path].MustMatmul(a, false).MustMulScalar(ts.FloatScalar(m.lora.scale), true)
			base := params[path+".weight"].Tensor()
			sum := base.MustAdd(ba, true)
			ba.MustDrop()
			merged = ParamOf(sum)
			sum.MustDrop()
		})
		params[path+".weight"] = merged
	}
	return params
}

// peftPrefix is how PEFT names the wrapped causal LM's modules.
const peftPrefix = "base_model.model."

// SaveAdapter writes the adapters in PEFT's format (adapter_config.json and
// adapter_model.safetensors), which vLLM loads with --enable-lora and /v1/load_lora_adapter.
func (m *Model) SaveAdapter(dir string) error {
	if m.lora == nil {
		return fmt.Errorf("save adapter: the model has no LoRA adapters")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	views := map[string]safetensors.TensorView{}
	for name, v := range m.lora.vs.Variables() {
		p := ParamOf(&v)
		shape := make([]uint64, len(p.Shape))
		for i, s := range p.Shape {
			shape[i] = uint64(s)
		}
		tv, err := safetensors.NewTensorView(safetensors.F32, shape, Float32Bytes(p.Data))
		if err != nil {
			return fmt.Errorf("save adapter: %s: %w", name, err)
		}
		views[peftPrefix+name] = tv
	}
	f, err := os.Create(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	if err := safetensors.SerializeToWriter(views, map[string]string{"format": "pt"}, f); err != nil {
		f.Close()
		return fmt.Errorf("save adapter: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	o := m.lora.opts
	cfg := map[string]any{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": nil,
		"r": o.Rank, "lora_alpha": o.Alpha, "lora_dropout": 0.0, "target_modules": o.Targets,
		"bias": "none", "fan_in_fan_out": false, "inference_mode": true, "modules_to_save": nil,
		"init_lora_weights": true, "use_rslora": false, "use_dora": false,
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	return os.WriteFile(filepath.Join(dir, "adapter_config.json"), append(data, '\n'), 0o644)
}

// LoadAdapter copies adapter weights saved by SaveAdapter (or PEFT) into the model's adapters,
// which must have been enabled with the same rank and targets.
func (m *Model) LoadAdapter(dir string) error {
	if m.lora == nil {
		return fmt.Errorf("load adapter: enable LoRA first")
	}
	read, err := weights.ReadFile(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		return fmt.Errorf("load adapter %s: %w", dir, err)
	}
	params := map[string]Param{}
	for name, t := range read {
		params[strings.TrimPrefix(name, peftPrefix)] = Param(t)
	}
	return setVars(m.lora.vs, m.device, params)
}

// Float32Bytes encodes values as little-endian float32, safetensors' F32 layout.
func Float32Bytes(v []float32) []byte { return encodeFloats(v, safetensors.F32) }

// Float32sFromBytes decodes little-endian float32 values.
func Float32sFromBytes(b []byte) []float32 {
	out, _ := weights.Decode(b, safetensors.F32)
	return out
}

// NewCritic makes a critic initialised from m (docs/method.md: "separate critic initialised from the same
// checkpoint"): a copy of m's weights, adapters merged, with a fresh value head.
func NewCritic(m *Model, seed uint64) (*Model, error) {
	c, err := New(m.Config, Options{Device: m.device, ValueHead: true, Seed: seed})
	if err != nil {
		return nil, err
	}
	params := c.Params()
	for name, p := range m.mergedParams() {
		if !strings.HasPrefix(name, "score.") {
			params[name] = p
		}
	}
	if err := c.SetParams(params); err != nil {
		c.Close()
		return nil, fmt.Errorf("new critic: %w", err)
	}
	return c, nil
}
