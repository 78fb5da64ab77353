package model

import (
	"fmt"
	"strconv"
)

// Shape is one parameter's Hugging Face name and dimensions.
type Shape struct {
	Name string
	Dims []int
}

// maxParameters bounds what a config may describe; the largest Qwen2 is 72B. It keeps a hostile
// config.json from sizing allocations before any weight has been read.
const maxParameters = 1 << 40

// Shapes lists the parameters a config describes, in the order New creates them; valueHead adds
// the critic's score head. An untied lm_head is listed; a tied one is not (it is the embedding).
func Shapes(c Config, valueHead bool) []Shape {
	H, I, V := c.HiddenSize, c.IntermediateSize, c.VocabSize
	hd, nh, nkv := c.HeadDim(), c.NumAttentionHeads, c.NumKeyValueHeads
	out := []Shape{{"model.embed_tokens.weight", []int{V, H}}}
	for i := range c.NumHiddenLayers {
		lp := "model.layers." + strconv.Itoa(i) + "."
		out = append(out,
			Shape{lp + "input_layernorm.weight", []int{H}},
			Shape{lp + "post_attention_layernorm.weight", []int{H}},
			Shape{lp + "self_attn.q_proj.weight", []int{nh * hd, H}},
			Shape{lp + "self_attn.q_proj.bias", []int{nh * hd}},
			Shape{lp + "self_attn.k_proj.weight", []int{nkv * hd, H}},
			Shape{lp + "self_attn.k_proj.bias", []int{nkv * hd}},
			Shape{lp + "self_attn.v_proj.weight", []int{nkv * hd, H}},
			Shape{lp + "self_attn.v_proj.bias", []int{nkv * hd}},
			Shape{lp + "self_attn.o_proj.weight", []int{H, nh * hd}},
			Shape{lp + "mlp.gate_proj.weight", []int{I, H}},
			Shape{lp + "mlp.up_proj.weight", []int{I, H}},
			Shape{lp + "mlp.down_proj.weight", []int{H, I}},
		)
	}
	out = append(out, Shape{"model.norm.weight", []int{H}})
	if !c.TieWordEmbeddings {
		out = append(out, Shape{"lm_head.weight", []int{V, H}})
	}
	if valueHead {
		out = append(out, Shape{"score.weight", []int{1, H}}, Shape{"score.bias", []int{1}})
	}
	return out
}

// ParameterCount is the number of values Shapes describes, or an error when it is beyond what
// spa can hold (or overflows).
func ParameterCount(c Config, valueHead bool) (int64, error) {
	var n float64 // float64 first: int64 products of hostile dimensions can overflow
	for _, s := range Shapes(c, valueHead) {
		size := 1.0
		for _, d := range s.Dims {
			size *= float64(d)
		}
		if n += size; n > maxParameters {
			return 0, fmt.Errorf("the config describes more than %d parameters (%s is %v)", int64(maxParameters), s.Name, s.Dims)
		}
	}
	return int64(n), nil // exact: every partial sum is an integer below 2^53
}

// CheckParams compares weights read from a checkpoint with the parameters its config describes,
// before anything is allocated for the model: every parameter present with its shape, and nothing
// unknown (a tied lm_head saved anyway is allowed; score.* marks a critic).
func CheckParams(c Config, params map[string]Param) error {
	if _, err := ParameterCount(c, false); err != nil {
		return err
	}
	_, critic := params["score.weight"]
	want := map[string][]int{}
	for _, s := range Shapes(c, critic) {
		want[s.Name] = s.Dims
	}
	var missing, extra, bad []string
	for name, dims := range want {
		p, ok := params[name]
		if !ok {
			missing = append(missing, name)
		} else if fmt.Sprint(p.Shape) != fmt.Sprint(dims) {
			bad = append(bad, fmt.Sprintf("%s: shape %v, config.json says %v", name, p.Shape, dims))
		}
	}
	for name := range params {
		if _, ok := want[name]; !ok && !(c.TieWordEmbeddings && name == "lm_head.weight") {
			extra = append(extra, name)
		}
	}
	if err := mismatch(missing, extra, bad); err != nil {
		return fmt.Errorf("weights do not match config.json: %w", err)
	}
	return nil
}
