"""Writes Gymnasium FrozenLake-v1's maps and transition tables (slippery) as JSON, the fixture
envs/frozenlake/testdata/gymnasium.json that spa's FrozenLake is checked against.

    sdk/python/.venv/bin/python sdk/python/tools/frozenlake_table.py > envs/frozenlake/testdata/gymnasium.json
"""

import json
import sys

import gymnasium as gym


def table(map_name):
    u = gym.make("FrozenLake-v1", map_name=map_name, is_slippery=True).unwrapped
    desc = ["".join(c.decode() for c in row) for row in u.desc]
    P = {str(s): {str(a): [[float(p), int(ns), float(r), bool(t)] for (p, ns, r, t) in u.P[s][a]] for a in range(4)}
         for s in range(u.nrow * u.ncol)}
    return {"desc": desc, "P": P}


json.dump({"gymnasium": gym.__version__, "actions": ["Left", "Down", "Right", "Up"],
           "maps": {name: table(name) for name in ["4x4", "8x8"]}}, sys.stdout, sort_keys=True)
sys.stdout.write("\n")
