#!/usr/bin/env python3
"""Sends the same greedy chat requests to two OpenAI-compatible servers serving the same weights
(spa serve and vLLM) and compares what comes back: prompt token ids, generated token ids and
their log-probabilities. Standard library only.

    compare.py URL_A URL_B [MAX_LOGPROB_DIFF]    (default 1e-4)

Greedy decoding on two engines may part at a near-tie (two tokens within float32 noise); the
comparison then stops at that token and counts it, but only if the two best log-probabilities
there are within 1e-3 of each other; any other difference fails. Prints one JSON line, exits 1 on
a failure.
"""
import json
import sys
import urllib.request

STATES = [
    "######\n#_P__#\n#_X_O#\n######",
    "######\n#O___#\n#_X__#\n#__P_#\n######",
    "######\n#____#\n#P_XO#\n#____#\n######",
    "######\n#__O_#\n#__X_#\n#__P_#\n######",
]


def ask(base, state):
    body = {"model": "spa", "temperature": 0, "max_tokens": 32, "ignore_eos": True, "logprobs": True,
            "top_logprobs": 2, "return_token_ids": True,
            "messages": [{"role": "system", "content": "You are solving a Sokoban puzzle. Think, then answer."},
                         {"role": "user", "content": "Turn 1:\nState:\n" + state + "\nYou have 10 actions left."}]}
    req = urllib.request.Request(base.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        out = json.load(resp)
    choice = out["choices"][0]
    return out.get("prompt_token_ids"), choice["token_ids"], choice["logprobs"]["content"]


def main():
    a, b = sys.argv[1], sys.argv[2]
    bar = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    report = {"prompts": len(STATES), "tokens_compared": 0, "near_ties": 0, "max_logprob_diff": 0.0}
    failed = []
    for state in STATES:
        pa, ta, la = ask(a, state)
        pb, tb, lb = ask(b, state)
        if pa != pb:
            failed.append(f"prompt ids differ for {state!r}: {pa} vs {pb}")
            continue
        for i, (x, y) in enumerate(zip(ta, tb)):
            report["max_logprob_diff"] = max(report["max_logprob_diff"], abs(la[i]["logprob"] - lb[i]["logprob"]))
            report["tokens_compared"] += 1
            if x != y:
                top = la[i]["top_logprobs"]
                if len(top) > 1 and abs(top[0]["logprob"] - top[1]["logprob"]) < 1e-3:
                    report["near_ties"] += 1
                else:
                    failed.append(f"token {i} differs for {state!r}: {x} vs {y}, not a near-tie")
                break
    if report["max_logprob_diff"] > bar:
        failed.append(f"logprobs differ by {report['max_logprob_diff']:.3g} > {bar}")
    report["ok"] = not failed
    print(json.dumps(report))
    for f in failed:
        print("compare:", f, file=sys.stderr)
    sys.exit(1 if failed else 0)


main()
