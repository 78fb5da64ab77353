#!/usr/bin/env python3
"""Checks a checkpoint spa's learner wrote against Hugging Face transformers, and against spa serve
serving the same directory. Run by make interop (scripts/interop.sh) in the pinned environment:

    check_checkpoint.py CKPT INIT BASE_URL

- AutoModelForCausalLM loads CKPT with no missing, unexpected or mismatched keys, and its weights
  differ from INIT's (the checkpoint it was trained from), so a training step really happened.
- AutoTokenizer loads CKPT's tokenizer, and apply_chat_template(tokenize=True) gives the prompt
  ids spa serve reports for the same chat request (return_token_ids).
- transformers' greedy continuation of that prompt is spa's (temperature 0, ignore_eos), and the
  log-probabilities of spa's tokens under transformers match spa's to 1e-4.

Prints one JSON line with the measurements; exits 1 when a check fails.
"""
import json
import sys
import urllib.request

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ckpt, init, base = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")
report, failed = {}, []

model, info = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32, output_loading_info=True)
model.eval()
report["loading"] = {k: len(v) for k, v in info.items()}
if any(info.values()):
    failed.append(f"loading info {info}")
start = AutoModelForCausalLM.from_pretrained(init, torch_dtype=torch.float32).state_dict()
changed = max((p - start[n]).abs().max().item() for n, p in model.state_dict().items())
report["max_weight_change_from_init"] = changed
if not changed > 0:
    failed.append("the checkpoint's weights equal its initial checkpoint's")

tok = AutoTokenizer.from_pretrained(ckpt)
messages = [
    {"role": "system", "content": "You are solving a Sokoban puzzle. Think, then answer."},
    {"role": "user", "content": "Turn 1:\nState:\n######\n#_P__#\n#_X_O#\n######\nYou have 10 actions left."},
]
hf_prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)

body = {"model": "spa", "messages": messages, "max_tokens": 16, "temperature": 0, "ignore_eos": True,
        "logprobs": True, "return_token_ids": True}
req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=60) as resp:
    out = json.load(resp)
spa_prompt, choice = out["prompt_token_ids"], out["choices"][0]
spa_ids = choice["token_ids"]
spa_lp = [c["logprob"] for c in choice["logprobs"]["content"]]
report["prompt_tokens"] = len(hf_prompt)
report["prompt_ids_equal"] = hf_prompt == spa_prompt
if hf_prompt != spa_prompt:
    failed.append(f"prompt ids differ:\n hf  {hf_prompt}\n spa {spa_prompt}")

with torch.no_grad():
    gen = model.generate(torch.tensor([hf_prompt]), max_new_tokens=len(spa_ids), do_sample=False,
                         eos_token_id=None, pad_token_id=0,
                         attention_mask=torch.ones(1, len(hf_prompt), dtype=torch.long))[0, len(hf_prompt):].tolist()
    logits = model(torch.tensor([hf_prompt + spa_ids])).logits[0].float()
lp = torch.log_softmax(logits, -1)
hf_lp = [lp[len(hf_prompt) - 1 + i, t].item() for i, t in enumerate(spa_ids)]
report["generated_tokens"] = len(spa_ids)
report["greedy_equal"] = gen == spa_ids
if gen != spa_ids:
    failed.append(f"greedy tokens differ:\n hf  {gen}\n spa {spa_ids}")
diff = max(abs(a - b) for a, b in zip(hf_lp, spa_lp))
report["max_logprob_diff"] = diff
if not diff <= 1e-4:
    failed.append(f"logprobs differ by {diff}")
report["ok"] = not failed
print(json.dumps(report))
for f in failed:
    print("check_checkpoint:", f, file=sys.stderr)
sys.exit(1 if failed else 0)
