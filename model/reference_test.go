package model

import (
	"math"
	"strconv"
)

// refForward is an independent float64 forward pass of a Qwen2 decoder, written from the
// architecture's equations with plain loops (no gotch), for one unpadded sequence. It returns the
// logits [T][vocab].
func refForward(cfg Config, w map[string]Param, ids []int) [][]float64 {
	H, nh, nkv, hd := cfg.HiddenSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim()
	T := len(ids)
	get := func(name string) []float64 {
		p, ok := w[name]
		if !ok {
			panic("reference: no parameter " + name)
		}
		out := make([]float64, len(p.Data))
		for i, v := range p.Data {
			out[i] = float64(v)
		}
		return out
	}
	// matvec computes W x (+ b) for W [out][in] stored row-major.
	matvec := func(W []float64, b []float64, x []float64, out int) []float64 {
		in := len(x)
		y := make([]float64, out)
		for o := range out {
			s := 0.0
			for i := range in {
				s += W[o*in+i] * x[i]
			}
			if b != nil {
				s += b[o]
			}
			y[o] = s
		}
		return y
	}
	rms := func(x, g []float64) []float64 {
		ms := 0.0
		for _, v := range x {
			ms += v * v
		}
		inv := 1 / math.Sqrt(ms/float64(len(x))+cfg.RMSNormEps)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = x[i] * inv * g[i]
		}
		return y
	}
	rope := func(v []float64, pos int) []float64 { // one head
		out := make([]float64, hd)
		for i := range hd / 2 {
			a := float64(pos) * math.Pow(cfg.RopeTheta, -float64(2*i)/float64(hd))
			c, s := math.Cos(a), math.Sin(a)
			x1, x2 := v[i], v[i+hd/2]
			out[i] = x1*c - x2*s
			out[i+hd/2] = x2*c + x1*s
		}
		return out
	}
	emb := get("model.embed_tokens.weight")
	h := make([][]float64, T)
	for t, id := range ids {
		h[t] = append([]float64(nil), emb[id*H:(id+1)*H]...)
	}
	for l := range cfg.NumHiddenLayers {
		p := "model.layers." + strconv.Itoa(l) + "."
		qW, qB, kW, kB := get(p+"self_attn.q_proj.weight"), get(p+"self_attn.q_proj.bias"), get(p+"self_attn.k_proj.weight"), get(p+"self_attn.k_proj.bias")
		vW, vB, oW := get(p+"self_attn.v_proj.weight"), get(p+"self_attn.v_proj.bias"), get(p+"self_attn.o_proj.weight")
		q := make([][]float64, T)
		k := make([][]float64, T)
		v := make([][]float64, T)
		for t := range T {
			x := rms(h[t], get(p+"input_layernorm.weight"))
			q[t], k[t], v[t] = matvec(qW, qB, x, nh*hd), matvec(kW, kB, x, nkv*hd), matvec(vW, vB, x, nkv*hd)
			for a := range nh {
				copy(q[t][a*hd:], rope(q[t][a*hd:(a+1)*hd], t))
			}
			for a := range nkv {
				copy(k[t][a*hd:], rope(k[t][a*hd:(a+1)*hd], t))
			}
		}
		for t := range T {
			att := make([]float64, nh*hd)
			for a := range nh {
				kvh := a / (nh / nkv) // grouped-query: consecutive query heads share a kv head
				scores := make([]float64, t+1)
				top := math.Inf(-1)
				for j := 0; j <= t; j++ {
					s := 0.0
					for d := range hd {
						s += q[t][a*hd+d] * k[j][kvh*hd+d]
					}
					scores[j] = s / math.Sqrt(float64(hd))
					top = math.Max(top, scores[j])
				}
				sum := 0.0
				for j := range scores {
					scores[j] = math.Exp(scores[j] - top)
					sum += scores[j]
				}
				for j := range scores {
					for d := range hd {
						att[a*hd+d] += scores[j] / sum * v[j][kvh*hd+d]
					}
				}
			}
			o := matvec(oW, nil, att, H)
			for i := range H {
				h[t][i] += o[i]
			}
			x := rms(h[t], get(p+"post_attention_layernorm.weight"))
			g := matvec(get(p+"mlp.gate_proj.weight"), nil, x, cfg.IntermediateSize)
			u := matvec(get(p+"mlp.up_proj.weight"), nil, x, cfg.IntermediateSize)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			f := matvec(get(p+"mlp.down_proj.weight"), nil, g, H)
			for i := range H {
				h[t][i] += f[i]
			}
		}
	}
	head := "lm_head.weight"
	if cfg.TieWordEmbeddings {
		head = "model.embed_tokens.weight"
	}
	W := get(head)
	logits := make([][]float64, T)
	for t := range T {
		logits[t] = matvec(W, nil, rms(h[t], get("model.norm.weight")), cfg.VocabSize)
	}
	return logits
}
