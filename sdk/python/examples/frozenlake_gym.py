"""Gymnasium's FrozenLake-v1 served to spa's agents through the Gymnasium adapter.

    python frozenlake_gym.py --bus nats://127.0.0.1:4222
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, uninstalled

from spa_env import serve_main
from spa_env.gym import GymnasiumEnv


def grid(env) -> str:
    """The map with the player as P (Gymnasium's ansi rendering marks it with a colour only)."""
    u = env.unwrapped
    rows = [[c.decode() for c in row] for row in u.desc]
    r, c = divmod(int(u.s), u.ncol)
    rows[r][c] = "P"
    return "\n".join("".join(row) for row in rows)


def make(variant: str) -> GymnasiumEnv:
    return GymnasiumEnv(
        "FrozenLake-v1", ["Left", "Down", "Right", "Up"], name="frozenlake-gym", variant=variant,
        instructions="You are on a frozen lake. Reach the goal G without falling into a hole H; the ice is slippery.",
        legend="P: you. S: start. F: frozen ice. H: hole. G: goal.", max_actions=100,
        make_kwargs={"map_name": variant, "is_slippery": True}, render=grid)


if __name__ == "__main__":
    serve_main("frozenlake-gym", make, ["4x4", "8x8"])
