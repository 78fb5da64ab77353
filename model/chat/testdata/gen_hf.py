#!/usr/bin/env python3
"""Renders the same conversations as gen_qwen3.py with Hugging Face transformers itself:
AutoTokenizer on the shared Qwen3 tokenizer folder and apply_chat_template, both as text and
as token ids (tokenize=True). Output: qwen3-hf.jsonl, which TestTemplateIDsMatchTransformers
compares with spa's rendering encoded by spa's tokenizer.

Run from this directory in the pinned transformers environment (make interop does):
    ../../testdata/hf/.venv/bin/python gen_hf.py
"""
import json
import os
import sys

from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_qwen3 import CASES  # noqa: E402

FOLDER = "../../../../shared/testdata/tokenizer/qwen3"

tok = AutoTokenizer.from_pretrained(FOLDER)
out_path = sys.argv[1] if len(sys.argv) > 1 else "qwen3-hf.jsonl"
with open(out_path, "w") as out:
    for name, msgs, gen in CASES:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)
        out.write(json.dumps({"name": name, "messages": msgs, "add_generation_prompt": gen,
                              "text": text, "ids": ids}, ensure_ascii=False) + "\n")
print("wrote", len(CASES), "cases with transformers", __import__("transformers").__version__)
