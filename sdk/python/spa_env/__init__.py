"""spa_env: serve Python and Gymnasium environments to spa's agents over the bus.

Write a class with spec(), reset(seed), step(action) and render(mode), then call serve() (or
serve_main() for a command line). The protocol is docs/bus-protocol.md; `spa env check NAME --bus
URL` checks any host against it.
"""

from .env import Env, Spec, Step
from .host import MAX_SEED, PROTOCOL, Host, ProtocolError, serve, serve_async, serve_main

__all__ = ["Env", "Spec", "Step", "Host", "ProtocolError", "serve", "serve_async", "serve_main", "PROTOCOL", "MAX_SEED"]
