#!/usr/bin/env python3
"""Copies a checkpoint with tied embeddings to one with an explicit, equal lm_head.weight and
tie_word_embeddings false: the same function, in the form vLLM's in-place reload updates
correctly (docs/interop.md). Usage: untie.py SRC DST (run in the vLLM environment)."""
import json
import os
import shutil
import sys

from safetensors.torch import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for f in ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
    shutil.copy(os.path.join(src, f), dst)
cfg = json.load(open(os.path.join(src, "config.json")))
cfg["tie_word_embeddings"] = False
with open(os.path.join(dst, "config.json"), "w") as out:
    json.dump(cfg, out, indent=2)
weights = load_file(os.path.join(src, "model.safetensors"))
weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
save_file(weights, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
