#!/usr/bin/env python3
"""Hugging Face transformers parity fixtures for spa's model package, both directions.

Run where PyTorch and transformers are installed, from the repository root. On spa's Debian
machines, over Debian's python3-torch (requirements.txt pins the rest):

    PYENV_PYTHON=/usr/bin/python3 PYENV_SYSTEM_SITE=1 PYENV_NO_DEPS=1 scripts/pyenv.sh model/testdata/hf
    model/testdata/hf/.venv/bin/python model/testdata/hf/make_fixture.py "$OUT"

1. transformers -> spa: builds two tiny random Qwen2ForCausalLM (torch.manual_seed(0)) and saves
   each with save_pretrained (safetensors): $OUT/qwen2-tiny/ (untied head, grouped-query
   attention, rope_theta 1e6, rms_norm_eps 1e-5) and $OUT/qwen2-tiny-tied/ (tied embeddings, the
   defaults otherwise). Each gets logits.json: its logits for fixed inputs (one padded batch) and
   32 greedily generated tokens after a prompt. Commit the folders under model/testdata/hf/;
   TestHuggingFaceParity then requires spa to reproduce both.
2. spa -> transformers: loads model/testdata/hf/spa-tiny/ (written by spa's Save) with
   transformers, computes logits for the same inputs and compares them with spa's own
   (spa-tiny/spa_logits.json), writing the result to $OUT/spa-tiny-check.json.
3. PEFT -> spa: a LoRA adapter PEFT makes on qwen2-tiny (A and B random, so it changes the
   logits), saved to $OUT/qwen2-tiny-lora/ with the adapted logits; TestPEFTAdapterLoads.
4. spa -> PEFT: loads model/testdata/hf/spa-lora/ (an adapter spa's SaveAdapter wrote on spa-tiny)
   with PeftModel.from_pretrained and compares the logits with spa's, in $OUT/spa-lora-check.json.
"""
import json
import os
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
INPUTS = json.load(open(os.path.join(HERE, "inputs.json")))


def logits_of(model):
    ids = torch.tensor(INPUTS["ids"])
    mask = torch.tensor(INPUTS["attention_mask"])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    return out.float().tolist()


PROMPT = [3, 14, 15, 9, 26, 5]


def greedy(model):
    """32 tokens generated greedily after PROMPT (no end-of-sequence stop)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=32, do_sample=False, eos_token_id=None,
                             pad_token_id=0, attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long))
    return out[0, len(PROMPT):].tolist()


def tiny(out, name, **kw):
    cfg = Qwen2Config(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.2, torch_dtype="float32", **kw)
    model = Qwen2ForCausalLM(cfg).eval()
    # Random biases and norms too, so every parameter matters.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname:
                p.add_(0.1 * torch.randn_like(p))
    dst = os.path.join(out, name)
    model.save_pretrained(dst, safe_serialization=True)
    json.dump({"inputs": INPUTS, "logits": logits_of(model), "prompt": PROMPT, "greedy": greedy(model)},
              open(os.path.join(dst, "logits.json"), "w"))


def max_diff(got, want):
    """The largest absolute difference over the positions the attention mask keeps."""
    mask = INPUTS["attention_mask"]
    return max(abs(a - b)
               for bi, (sg, sw) in enumerate(zip(got, want))
               for ti, (rg, rw) in enumerate(zip(sg, sw)) if mask[bi][ti]
               for a, b in zip(rg, rw))


def main(out):
    torch.manual_seed(0)
    tiny(out, "qwen2-tiny", tie_word_embeddings=False, rope_theta=1e6, rms_norm_eps=1e-5)
    tiny(out, "qwen2-tiny-tied", tie_word_embeddings=True, rope_theta=10000.0, rms_norm_eps=1e-6)

    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(1)
    base = Qwen2ForCausalLM.from_pretrained(os.path.join(out, "qwen2-tiny"), torch_dtype=torch.float32).eval()
    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                      target_modules=["q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"])
    peft_model = get_peft_model(base, lcfg).eval()
    dst = os.path.join(out, "qwen2-tiny-lora")
    peft_model.save_pretrained(dst, safe_serialization=True)
    # Keep the fixture reproducible: no model card, a relative base path, targets in order (PEFT
    # keeps them in a set).
    os.remove(os.path.join(dst, "README.md"))
    acfg_path = os.path.join(dst, "adapter_config.json")
    acfg = json.load(open(acfg_path))
    acfg["base_model_name_or_path"] = "../qwen2-tiny"
    acfg["target_modules"] = sorted(acfg["target_modules"])
    json.dump(acfg, open(acfg_path, "w"), indent=2, sort_keys=True)
    json.dump({"inputs": INPUTS, "logits": logits_of(peft_model)}, open(os.path.join(dst, "logits.json"), "w"))

    spa_lora = PeftModel.from_pretrained(
        Qwen2ForCausalLM.from_pretrained(os.path.join(HERE, "spa-tiny"), torch_dtype=torch.float32),
        os.path.join(HERE, "spa-lora")).eval()
    lwant = json.load(open(os.path.join(HERE, "spa-lora", "spa_logits.json")))["logits"]
    json.dump({"peft": __import__("peft").__version__, "max_abs_logit_diff": max_diff(logits_of(spa_lora), lwant)},
              open(os.path.join(out, "spa-lora-check.json"), "w"))

    spa_dir = os.path.join(HERE, "spa-tiny")
    spa = Qwen2ForCausalLM.from_pretrained(spa_dir, torch_dtype=torch.float32).eval()
    want = json.load(open(os.path.join(spa_dir, "spa_logits.json")))["logits"]
    diff = max_diff(logits_of(spa), want)
    json.dump({"transformers": __import__("transformers").__version__, "torch": torch.__version__,
               "max_abs_logit_diff": diff}, open(os.path.join(out, "spa-tiny-check.json"), "w"))
    print("spa checkpoint in transformers: max |logit diff| =", diff)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
