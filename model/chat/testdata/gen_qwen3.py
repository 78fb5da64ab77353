#!/usr/bin/python3
"""Renders the Qwen3 chat template from the shared tokenizer_config.json with jinja2, configured as
Hugging Face transformers configures it (sandboxed, trim_blocks, lstrip_blocks), for the message
shapes spa uses. Output: qwen3.jsonl, the expected text for model/chat's tests.

Run from this directory with Debian's python3-jinja2: /usr/bin/python3 gen_qwen3.py
"""
import json

CONFIG = "../../../../shared/testdata/tokenizer/qwen3/tokenizer_config.json"

def raise_exception(msg):
    raise ValueError(msg)


S = {"role": "system", "content": "You are solving a Sokoban puzzle.\nThink, then answer."}
U1 = {"role": "user", "content": "Turn 1:\nState:\n######\n#_P__#\n#_X_O#\n######\nYou have 10 actions left."}
A1 = {"role": "assistant", "content": "<answer>Down || Right</answer>"}
U2 = {"role": "user", "content": "Reward: -0.1\nTurn 2:\nState:\n######\n#____#\n#_PXO#\n######"}
A2 = {"role": "assistant", "content": "<answer>Right</answer>"}
T1 = {"role": "assistant", "content": "<think><observation>P at (1,2)</observation>\n<prediction>P at (2,2)</prediction></think>\n<answer>Down</answer>"}
T2 = {"role": "assistant", "content": "<think>\n\nreason\n</think>\n\n<answer>Right</answer>"}
UNICODE = {"role": "user", "content": "中文 é 😀  two  spaces\n\n\ttab <|not special|>"}

CASES = [
    ("system, user, generation prompt", [S, U1], True),
    ("user only, generation prompt", [U1], True),
    ("two turns, generation prompt", [S, U1, A1, U2], True),
    ("SFT sample ends with the assistant", [S, U1, A1], False),
    ("three turns, no generation prompt", [S, U1, A1, U2, A2], False),
    ("unicode and whitespace", [S, UNICODE], True),
    ("empty user message", [S, {"role": "user", "content": ""}], True),
    ("world-model turn then a new user turn", [S, U1, T1, U2], True),
    ("world-model turn last (SFT)", [S, U1, T1], False),
    ("earlier think stripped, last kept", [S, U1, T1, U2, T2], False),
    ("system not first", [U1, S, U2], True),
]
if __name__ == "__main__":
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    template = env.from_string(json.load(open(CONFIG))["chat_template"])
    with open("qwen3.jsonl", "w") as out:
        for name, msgs, gen in CASES:
            text = template.render(messages=msgs, add_generation_prompt=gen, tools=None)
            out.write(json.dumps({"name": name, "messages": msgs, "add_generation_prompt": gen, "text": text}, ensure_ascii=False) + "\n")
    print("wrote", len(CASES), "cases")
