"""Corridor: a spa environment in Python. The agent (P) walks a one-row corridor to the goal (G)
with Left and Right, within 10 actions.

    python corridor.py --bus nats://127.0.0.1:4222 [--token T | --user U --password P]
"""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, uninstalled

from spa_env import Env, Spec, Step, serve_main

LENGTHS = {"7": 7, "12": 12}


class Corridor(Env):
    def __init__(self, variant: str):
        self.variant, self.length = variant, LENGTHS[variant]

    def spec(self) -> Spec:
        return Spec(
            name="corridor-py", variant=self.variant,
            description=f"walk a {self.length}-cell corridor to the goal",
            instructions="You are in a corridor. Reach the goal G by moving Left or Right.",
            world_model_instructions="Describe where P and G are, and predict where P will be after your actions.",
            legend="P: you. G: goal. _: floor. #: wall.",
            actions=["Left", "Right"], max_actions=10, render_modes=["raw", "coords"])

    def reset(self, seed: int) -> None:
        rng = random.Random(seed)
        self.goal = rng.randrange(self.length)
        self.player = rng.choice([i for i in range(self.length) if i != self.goal])
        self.used = 0

    def step(self, action: str) -> Step:
        move = {"left": -1, "right": 1}.get(action.strip().lower())
        if move is None:
            return Step(valid=False)
        self.player = min(self.length - 1, max(0, self.player + move))
        self.used += 1
        success = self.player == self.goal
        return Step(reward=1.0 if success else 0.0, done=success or self.used >= 10, success=success)

    def render(self, mode: str) -> str:
        raw = "#" + "".join("P" if i == self.player else "G" if i == self.goal else "_" for i in range(self.length)) + "#"
        if mode == "coords":
            return f"{raw}\nYou are at column {self.player + 1}; the goal is at column {self.goal + 1}."
        return raw


if __name__ == "__main__":
    serve_main("corridor-py", Corridor, list(LENGTHS))
