"""What an environment is to spa: a spec, reset(seed), step(action) and render(mode)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import List


@dataclass
class Spec:
    """Describes an environment to agents; the fields are docs/bus-protocol.md's spec reply.

    actions lists action names; action_format says how to write an action when they are not
    names (Sudoku: "r,c,v"). max_actions is the episode's budget of valid actions.
    """

    name: str
    variant: str
    description: str
    instructions: str
    actions: List[str] = field(default_factory=list)
    action_format: str = ""
    max_actions: int = 10
    render_modes: List[str] = field(default_factory=lambda: ["raw"])
    world_model_instructions: str = ""
    legend: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Step:
    """The outcome of one action.

    valid is False when the action did not parse or broke the rules: such an action must change
    nothing, earn nothing and not use the budget (spa's rollout adds the format penalty). done is
    True once the episode is over: solved, lost, or out of actions.
    """

    reward: float = 0.0
    done: bool = False
    success: bool = False
    valid: bool = True


class Env:
    """Subclass this: spa's agents play it once it is served with spa_env.serve.

    One instance plays one episode at a time; the host makes one per session.
    """

    def spec(self) -> Spec:
        raise NotImplementedError

    def reset(self, seed: int) -> None:
        """Starts an episode. The same seed must always give the same episode."""
        raise NotImplementedError

    def step(self, action: str) -> Step:
        raise NotImplementedError

    def render(self, mode: str) -> str:
        """Renders the state in one of spec().render_modes."""
        raise NotImplementedError

    def explore(self, rng: random.Random) -> str:
        """Proposes a random well-formed action for the current state (spa's self-play explorer
        uses it). The default draws one of the spec's action names."""
        actions = self.spec().actions
        return rng.choice(actions) if actions else ""
