package model

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nlpodyssey/safetensors"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"
)

// Param is one parameter's values, row-major.
type Param struct {
	Shape []int
	Data  []float32
}

// Params copies every parameter out of the model, by Hugging Face name. A tied lm_head is not
// listed (Hugging Face does not save it either).
func (m *Model) Params() map[string]Param {
	out := map[string]Param{}
	for name, v := range m.vs.Variables() {
		out[name] = ParamOf(&v)
	}
	return out
}

// ParamOf copies a tensor's shape and values out as float32.
func ParamOf(t *ts.Tensor) Param {
	return Param{Shape: shapeInts(t.MustSize()), Data: Float32s(t)}
}

// Tensor makes a CPU float tensor of the parameter.
func (p Param) Tensor() *ts.Tensor { return Float32Tensor(p.Data, shape64(p.Shape)...) }

// SetParams copies values into the model. Every parameter must be present with its shape;
// names the model does not have are an error too, unless listed in ignore.
func (m *Model) SetParams(params map[string]Param, ignore ...string) error {
	return setVars(m.vs, m.device, params, ignore...)
}

// setVars copies params into vs's variables; see SetParams.
func setVars(vs *nn.VarStore, device gotch.Device, params map[string]Param, ignore ...string) error {
	vars := vs.Variables()
	var missing, extra, bad []string
	for name, v := range vars {
		p, ok := params[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		if fmt.Sprint(p.Shape) != fmt.Sprint(shapeInts(v.MustSize())) {
			bad = append(bad, fmt.Sprintf("%s: shape %v, model has %v", name, p.Shape, v.MustSize()))
		}
	}
	skip := map[string]bool{}
	for _, n := range ignore {
		skip[n] = true
	}
	for name := range params {
		if _, ok := vars[name]; !ok && !skip[name] {
			extra = append(extra, name)
		}
	}
	if err := mismatch(missing, extra, bad); err != nil {
		return fmt.Errorf("load weights: %w", err)
	}
	for name, v := range vars {
		p := params[name]
		src := p.Tensor()
		if v.DType() != gotch.Float {
			src = src.MustTotype(v.DType(), true)
		}
		src = ToDevice(src, device)
		dst := v
		ts.NoGrad(func() { dst.Copy_(src) })
		src.MustDrop()
	}
	return nil
}

// mismatch describes the parameters missing, unexpected and of the wrong shape (up to 8 of each),
// or is nil when all three lists are empty.
func mismatch(missing, extra, bad []string) error {
	var errs []error
	for _, l := range []struct {
		what  string
		names []string
	}{{"missing", missing}, {"unexpected", extra}, {"mismatched", bad}} {
		if len(l.names) > 0 {
			sort.Strings(l.names)
			errs = append(errs, fmt.Errorf("%d %s: %s", len(l.names), l.what, strings.Join(first(l.names, 8), ", ")))
		}
	}
	return errors.Join(errs...)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

func shapeInts(s []int64) []int {
	out := make([]int, len(s))
	for i, v := range s {
		out[i] = int(v)
	}
	return out
}

func shape64(s []int) []int64 {
	out := make([]int64, len(s))
	for i, v := range s {
		out[i] = int64(v)
	}
	return out
}

// SaveOptions configure Save.
type SaveOptions struct {
	// DType of the stored weights: "float32" (default) or "bfloat16".
	DType string
}

// Save writes a Hugging Face checkpoint: config.json, generation_config.json and
// model.safetensors with Hugging Face parameter names, loadable by transformers and vLLM. A model
// with LoRA adapters is saved with the adapters merged into the weights.
func Save(dir string, m *Model, opts SaveOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	dtype := safetensors.F32
	switch opts.DType {
	case "", "float32":
		opts.DType = "float32"
	case "bfloat16":
		dtype = safetensors.BF16
	default:
		return fmt.Errorf("save model: dtype %q (want float32 or bfloat16)", opts.DType)
	}
	views := map[string]safetensors.TensorView{}
	for name, p := range m.mergedParams() {
		data := encodeFloats(p.Data, dtype)
		shape := make([]uint64, len(p.Shape))
		for i, s := range p.Shape {
			shape[i] = uint64(s)
		}
		v, err := safetensors.NewTensorView(dtype, shape, data)
		if err != nil {
			return fmt.Errorf("save model: %s: %w", name, err)
		}
		views[name] = v
	}
	tmp := filepath.Join(dir, "model.safetensors.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	if err := safetensors.SerializeToWriter(views, map[string]string{"format": "pt"}, f); err != nil {
		f.Close()
		return fmt.Errorf("save model: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "model.safetensors")); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	cfg := m.Config
	cfg.TorchDType = opts.DType
	if err := SaveConfig(dir, cfg); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	gen := map[string]any{"do_sample": true, "transformers_version": "4.45.0"}
	if cfg.BOSTokenID != nil {
		gen["bos_token_id"] = *cfg.BOSTokenID
	}
	if len(cfg.EOSTokenID) > 0 {
		gen["eos_token_id"] = cfg.EOSTokenID
	}
	data, _ := json.MarshalIndent(gen, "", "  ")
	return os.WriteFile(filepath.Join(dir, "generation_config.json"), append(data, '\n'), 0o644)
}

// Checkpoint is a checkpoint directory read into memory and checked: its config and its weights,
// whose names and shapes match the config. Reading needs no torch, so it can happen on any thread
// and under a deadline, apart from the thread that builds the model.
type Checkpoint struct {
	Config Config
	Params map[string]Param
}

// ReadCheckpoint reads and checks dir's config.json and weights (see ReadSafetensors).
func ReadCheckpoint(dir string) (Checkpoint, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return Checkpoint{}, err
	}
	params, err := ReadSafetensors(dir)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%s: %w", dir, err)
	}
	if err := CheckParams(cfg, params); err != nil {
		return Checkpoint{}, fmt.Errorf("%s: %w", dir, err)
	}
	return Checkpoint{Config: cfg, Params: params}, nil
}

// Load reads a Hugging Face checkpoint directory: config.json, then model.safetensors or the
// shards listed in model.safetensors.index.json, in float32, bfloat16 or float16.
func Load(dir string, opts Options) (*Model, error) {
	ck, err := ReadCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	m, err := FromCheckpoint(ck, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// FromCheckpoint builds a model from a checkpoint read by ReadCheckpoint; a score head in the
// weights makes it a critic.
func FromCheckpoint(ck Checkpoint, opts Options) (*Model, error) {
	_, opts.ValueHead = ck.Params["score.weight"]
	m, err := New(ck.Config, opts)
	if err != nil {
		return nil, err
	}
	var ignore []string
	if ck.Config.TieWordEmbeddings {
		// Some exporters save the tied head anyway; it is the embedding.
		ignore = append(ignore, "lm_head.weight")
	}
	if err := m.SetParams(ck.Params, ignore...); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func encodeFloats(v []float32, dtype safetensors.DType) []byte {
	if dtype == safetensors.BF16 {
		b := make([]byte, 2*len(v))
		for i, f := range v {
			binary.LittleEndian.PutUint16(b[2*i:], float32ToBF16(f))
		}
		return b
	}
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// float32ToBF16 rounds to nearest even, as PyTorch does; NaN stays NaN.
func float32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f {
		return uint16(u>>16) | 0x40
	}
	return uint16((u + 0x7FFF + (u>>16)&1) >> 16)
}
