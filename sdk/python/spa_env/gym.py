"""Serve a Gymnasium environment to spa's agents.

Any environment with a discrete action space and a text rendering (render_mode="ansi") works:
the agent writes action names, which the adapter maps to the action space's indices.
"""

from __future__ import annotations

import re
from typing import Callable, List, Optional

from .env import Env, Spec, Step

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class GymnasiumEnv(Env):
    """Adapts gymnasium.make(env_id, render_mode="ansi", **make_kwargs) to spa's Env.

    actions names the action space's indices in order (for FrozenLake: Left, Down, Right, Up).
    An action that is not one of them (case-insensitive) is invalid: nothing happens and the budget
    is not used. The episode ends when Gymnasium terminates or truncates it, or after max_actions
    valid actions. success(reward, terminated, info) decides success; by default an episode that
    terminates with a positive reward succeeded. render(gym_env) may replace the default text,
    which is the ansi rendering without colour codes.
    """

    def __init__(self, env_id: str, actions: List[str], *, name: str, instructions: str, variant: str = "default",
                 description: str = "", legend: str = "", max_actions: int = 100, make_kwargs: Optional[dict] = None,
                 success: Optional[Callable[[float, bool, dict], bool]] = None,
                 render: Optional[Callable[[object], str]] = None):
        import gymnasium as gym

        self._env = gym.make(env_id, render_mode="ansi", **(make_kwargs or {}))
        n = getattr(self._env.action_space, "n", None)
        if n is None:
            raise ValueError(f"{env_id}: the action space {self._env.action_space} is not discrete")
        if len(actions) != int(n):
            raise ValueError(f"{env_id} has {n} actions; {len(actions)} names given ({', '.join(actions)})")
        self._index = {a.lower(): i for i, a in enumerate(actions)}
        self._spec = Spec(name=name, variant=variant, description=description or f"Gymnasium {env_id}",
                          instructions=instructions, legend=legend, actions=list(actions), max_actions=max_actions,
                          render_modes=["raw"])
        self._success = success or (lambda reward, terminated, info: terminated and reward > 0)
        self._render = render
        self.used = 0

    def spec(self) -> Spec:
        return self._spec

    def reset(self, seed: int) -> None:
        self._env.reset(seed=seed)
        self.used = 0

    def step(self, action: str) -> Step:
        i = self._index.get(action.strip().lower())
        if i is None:
            return Step(valid=False)
        _, reward, terminated, truncated, info = self._env.step(i)
        self.used += 1
        success = bool(self._success(float(reward), bool(terminated), info))
        done = bool(terminated or truncated or self.used >= self._spec.max_actions)
        return Step(reward=float(reward), done=done, success=success)

    def render(self, mode: str) -> str:
        if self._render is not None:
            return self._render(self._env)
        return _ANSI.sub("", str(self._env.render())).strip("\n")

    @property
    def gym_env(self):
        """The wrapped Gymnasium environment."""
        return self._env
