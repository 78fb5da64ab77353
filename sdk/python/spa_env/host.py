"""The host side of spa's environment protocol (docs/bus-protocol.md) over NATS.

A host answers spec and reset for its environment in a queue group shared by every host of that
environment, and step, close and explore for its own sessions on its own subject prefix. Users
call serve(); Host is the protocol itself, usable without NATS (Host.handle) for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import sys
import time
from typing import Callable, Dict, List, Optional

from .env import Env

PROTOCOL = 1
MAX_SEED = 2**53 - 1  # the largest integer every JSON reader (JavaScript's too) reads exactly
MAX_ACTION_BYTES = 4096
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ProtocolError(Exception):
    """An error reply: one of the protocol's codes and a message for the agent's logs."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> dict:
        return {"protocol": PROTOCOL, "error": {"code": self.code, "message": self.message}}


class _Session:
    __slots__ = ("env", "variant", "last_used", "done")

    def __init__(self, env: Env, variant: str):
        self.env = env
        self.variant = variant  # its spec gives the render modes
        self.last_used = time.monotonic()
        self.done = False


class Host:
    """One host of environment `name`.

    make_env(variant) returns a fresh Env for a session; variants lists the variants served, the
    first being the default. Sessions idle longer than session_ttl seconds are dropped, and at most
    max_sessions are kept (more resets get "overloaded").
    """

    def __init__(self, name: str, make_env: Callable[[str], Env], variants: List[str], *,
                 host_id: Optional[str] = None, session_ttl: float = 300.0, max_sessions: int = 100_000):
        if not _NAME.match(name):
            raise ValueError(f"environment name {name!r} must be 1-64 of A-Z a-z 0-9 - _ (it becomes a subject token)")
        if not variants:
            raise ValueError("serve at least one variant")
        if session_ttl <= 0 or max_sessions <= 0:
            raise ValueError("session_ttl and max_sessions must be positive")
        self.name = name
        self.make_env = make_env
        self.variants = list(variants)
        self.id = host_id or "py" + secrets.token_hex(6)
        if not _NAME.match(self.id):
            raise ValueError(f"host id {self.id!r} must be 1-64 of A-Z a-z 0-9 - _")
        self.prefix = f"spa.env.{name}.host.{self.id}"
        self.session_ttl = session_ttl
        self.max_sessions = max_sessions
        self.sessions: Dict[str, _Session] = {}
        self._next = 0
        self._specs = {v: make_env(v).spec() for v in self.variants}
        self._subs = []
        self._sweeper: Optional[asyncio.Task] = None
        self.stats = {"resets": 0, "steps": 0, "errors": 0, "expired": 0}

    # The protocol, without NATS.

    def handle(self, op: str, data: bytes) -> dict:
        """Answers one request: op is spec or reset (the environment's subjects) or a host
        operation. It never raises: failures become error replies."""
        try:
            if op == "spec":
                return self._spec(data)
            if op == "reset":
                return self._reset(data)
            if op == "step":
                return self._step(data)
            if op == "close":
                return self._close(data)
            if op == "explore":
                return self._explore(data)
            raise ProtocolError("unknown_op", f'unknown operation "{op}" (this host answers step, close, explore)')
        except ProtocolError as e:
            self.stats["errors"] += 1
            return e.reply()
        except Exception as e:  # the environment's own bug: report it and keep serving
            self.stats["errors"] += 1
            return ProtocolError("internal", f"{self.name} {op}: {type(e).__name__}: {e}").reply()

    def _parse(self, data: bytes) -> dict:
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError("bad_request", f"malformed JSON: {e}")
        if not isinstance(body, dict):
            raise ProtocolError("bad_request", "malformed JSON: the body must be an object")
        p = body.get("protocol")
        if p is None:
            raise ProtocolError("bad_request", f'missing "protocol" (this host speaks {PROTOCOL})')
        if type(p) is not int:
            raise ProtocolError("bad_request", f'"protocol" must be an integer, got {json.dumps(p)}')
        if p != PROTOCOL:
            raise ProtocolError("unsupported_protocol", f"protocol {p} requested; this host speaks {PROTOCOL}")
        return body

    def _variant(self, body: dict) -> str:
        v = body.get("variant")
        if v is None or v == "":
            return self.variants[0]
        if not isinstance(v, str):
            raise ProtocolError("bad_request", '"variant" must be a string')
        for ok in self.variants:
            if ok.lower() == v.lower():
                return ok
        raise ProtocolError("unknown_variant", f'{self.name} host serves variants {", ".join(self.variants)}, not "{v}"')

    @staticmethod
    def _seed(raw) -> int:
        if raw is None:
            raise ProtocolError("bad_seed", 'missing "seed"')
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ProtocolError("bad_seed", f"seed {json.dumps(raw)} is not a number")
        if isinstance(raw, float):
            raise ProtocolError("bad_seed", f"seed {raw} is not an integer in [0, {MAX_SEED}]")
        if raw < 0 or raw > MAX_SEED:
            raise ProtocolError("bad_seed", f"seed {raw} is outside [0, {MAX_SEED}]")
        return raw

    def _session(self, body: dict) -> tuple:
        sid = body.get("session")
        if not isinstance(sid, str):
            raise ProtocolError("bad_request", '"session" must be a string')
        s = self.sessions.get(sid)
        if s is None:
            raise ProtocolError("unknown_session",
                                f'no session "{sid}" on host {self.id} (never started, closed, or idle past its {self.session_ttl:g}s TTL)')
        s.last_used = time.monotonic()
        return sid, s

    def _observe(self, env: Env, variant: str) -> dict:
        return {m: env.render(m) for m in self._specs[variant].render_modes}

    def _spec(self, data: bytes) -> dict:
        body = self._parse(data)
        return {"protocol": PROTOCOL, "spec": self._specs[self._variant(body)].to_json()}

    def _reset(self, data: bytes) -> dict:
        body = self._parse(data)
        seed = self._seed(body.get("seed"))
        variant = self._variant(body)
        if len(self.sessions) >= self.max_sessions:
            raise ProtocolError("overloaded", f"host {self.id} holds its maximum of {self.max_sessions} sessions")
        env = self.make_env(variant)
        env.reset(seed)
        self._next += 1
        sid = f"{self.id}-{self._next:x}"
        self.sessions[sid] = _Session(env, variant)
        self.stats["resets"] += 1
        return {"protocol": PROTOCOL, "session": sid, "subject": self.prefix, "variant": variant,
                "observation": self._observe(env, variant), "ttl_ms": int(self.session_ttl * 1000), "explore": True}

    def _step(self, data: bytes) -> dict:
        body = self._parse(data)
        action = body.get("action")
        if not isinstance(action, str):
            raise ProtocolError("bad_action", '"action" must be a JSON string')
        try:
            size = len(action.encode("utf-8"))
        except UnicodeEncodeError:
            raise ProtocolError("bad_action", "action is not valid UTF-8")
        if size > MAX_ACTION_BYTES:
            raise ProtocolError("bad_action", f"action is {size} bytes; the limit is {MAX_ACTION_BYTES}")
        sid, s = self._session(body)
        if s.done:
            raise ProtocolError("episode_done", f"session {sid}: the episode has ended; reset for a new one")
        st = s.env.step(action)
        s.done = bool(st.done)
        self.stats["steps"] += 1
        return {"protocol": PROTOCOL, "reward": float(st.reward), "done": bool(st.done), "success": bool(st.success),
                "valid": bool(st.valid), "observation": self._observe(s.env, s.variant)}

    def _close(self, data: bytes) -> dict:
        body = self._parse(data)
        sid, _ = self._session(body)
        del self.sessions[sid]
        return {"protocol": PROTOCOL}

    def _explore(self, data: bytes) -> dict:
        body = self._parse(data)
        seed = self._seed(body.get("seed"))
        _, s = self._session(body)
        return {"protocol": PROTOCOL, "action": s.env.explore(random.Random(seed))}

    def info(self) -> dict:
        """The answer on spa.env.hosts: who this host is and what it serves."""
        return {"protocol": PROTOCOL, "env": self.name, "host": self.id, "variants": self.variants,
                "sessions": len(self.sessions), "runtime": "python"}

    def sweep(self) -> int:
        """Drops sessions idle longer than the TTL; returns how many."""
        cutoff = time.monotonic() - self.session_ttl
        old = [sid for sid, s in self.sessions.items() if s.last_used < cutoff]
        for sid in old:
            del self.sessions[sid]
        self.stats["expired"] += len(old)
        return len(old)

    # NATS.

    async def start(self, nc) -> None:
        """Subscribes on a connected nats-py client."""
        queue = f"spa.env.{self.name}"

        def responder(answer):
            async def cb(msg):
                reply = answer(msg)
                try:
                    data = json.dumps(reply, allow_nan=False).encode()
                except (TypeError, ValueError) as e:  # a NaN reward, an object in an observation
                    data = json.dumps(ProtocolError("internal", f"{self.name}: the reply cannot be JSON: {e}").reply()).encode()
                if msg.reply:  # close may be sent without a reply subject
                    await msg.respond(data)
            return cb

        n = len(self.prefix) + 1
        for subject, group, answer in [
            (f"spa.env.{self.name}.spec", queue, lambda m: self.handle("spec", m.data)),
            (f"spa.env.{self.name}.reset", queue, lambda m: self.handle("reset", m.data)),
            (self.prefix + ".*", "", lambda m: self.handle(m.subject[n:], m.data)),
            ("spa.env.hosts", "", lambda m: self.info()),  # every host answers: no queue group
        ]:
            self._subs.append(await nc.subscribe(subject, queue=group, cb=responder(answer)))
        await _subscribed(nc)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(self.session_ttl / 4, 0.05))
            self.sweep()

    async def stop(self) -> None:
        """Stops taking requests; the caller drains the connection."""
        if self._sweeper:
            self._sweeper.cancel()
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []


async def _subscribed(nc, timeout: float = 10.0) -> None:
    """Returns once the server has registered every subscription made so far on nc.

    nc.flush() does not promise that: nats-py 2.16 writes its PING straight to the socket while
    SUBs wait in the pending buffer for the flusher task, so the PONG can come back before the
    server has seen them, and a request sent right after "serving" got no responders (a CI run
    of TestGymnasiumEnvOverTheBus). A message to ourselves travels behind the SUBs in that
    buffer, and the server handles one connection's commands in order."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    await nc.publish(inbox, b"")
    try:
        await sub.next_msg(timeout=timeout)
    except Exception as e:
        await sub.unsubscribe()
        raise ConnectionError(f"the server did not confirm the host's subscriptions within {timeout:g}s: {type(e).__name__}: {e}") from e


async def serve_async(name: str, make_env: Callable[[str], Env], variants: List[str], url: str = "nats://127.0.0.1:4222", *,
                      user: Optional[str] = None, password: Optional[str] = None, token: Optional[str] = None,
                      creds: Optional[str] = None, session_ttl: float = 300.0, max_sessions: int = 100_000,
                      host_id: Optional[str] = None, stop: Optional[asyncio.Event] = None) -> None:
    """Serves until stop is set (or, when stop is None, until SIGINT or SIGTERM), then stops
    taking requests, drains the connection and returns."""
    import nats  # imported here so that Host works without nats-py, for tests

    host = Host(name, make_env, variants, host_id=host_id, session_ttl=session_ttl, max_sessions=max_sessions)
    opts = {"servers": [u.strip() for u in url.split(",")], "name": f"spa-env-py-{name}",
            "max_reconnect_attempts": -1, "connect_timeout": 5, "allow_reconnect": True}
    if user is not None:
        opts["user"], opts["password"] = user, password
    if token is not None:
        opts["token"] = token
    if creds is not None:
        opts["user_credentials"] = creds
    try:
        nc = await nats.connect(**opts)
    except Exception as e:
        raise ConnectionError(f"connect to nats {url}: {type(e).__name__}: {e}") from e
    await host.start(nc)
    print(f"serving {name} (variants {', '.join(variants)}) on {url}: host {host.id}, spa.env.{name}.reset", flush=True)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await host.stop()
    await nc.drain()
    st = host.stats
    print(f"stopping: {st['resets']} resets, {st['steps']} steps, {st['errors']} errors served", flush=True)


def serve(name: str, make_env: Callable[[str], Env], variants: List[str], url: str = "nats://127.0.0.1:4222", **kwargs) -> None:
    """Serves environment `name` on the bus at url until Ctrl-C or SIGTERM.

    make_env(variant) makes a fresh Env for each session; variants lists the variants served,
    the first being the default. Keyword arguments: user and password, token, or creds (a NATS
    credentials file); session_ttl (seconds) and max_sessions.
    """
    asyncio.run(serve_async(name, make_env, variants, url, **kwargs))


def serve_main(name: str, make_env: Callable[[str], Env], variants: List[str], argv: Optional[List[str]] = None) -> None:
    """serve() with a command line: --bus URL, --token, --user/--password, --creds, --session-ttl,
    and the same SPA_BUS_* environment variables spa reads."""
    ap = argparse.ArgumentParser(description=f"Serve the {name} environment to spa's agents over NATS.")
    ap.add_argument("--bus", default=os.environ.get("SPA_BUS_URL", "nats://127.0.0.1:4222"), help="NATS URL (SPA_BUS_URL)")
    ap.add_argument("--token", default=os.environ.get("SPA_BUS_TOKEN"), help="bus token (SPA_BUS_TOKEN)")
    ap.add_argument("--user", default=os.environ.get("SPA_BUS_USER"), help="bus user (SPA_BUS_USER)")
    ap.add_argument("--password", default=os.environ.get("SPA_BUS_PASSWORD"), help="bus password (SPA_BUS_PASSWORD)")
    ap.add_argument("--creds", default=os.environ.get("SPA_BUS_CREDS_FILE"), help="NATS credentials file (SPA_BUS_CREDS_FILE)")
    ap.add_argument("--session-ttl", type=float, default=300.0, help="drop sessions idle this many seconds")
    ap.add_argument("--variants", default=",".join(variants), help="variants to serve, comma-separated; the first is the default")
    a = ap.parse_args(argv)
    chosen = [v for v in a.variants.split(",") if v]
    unknown = [v for v in chosen if v not in variants]
    if unknown or not chosen:
        ap.error(f"--variants: {name} has variants {', '.join(variants)}")
    try:
        serve(name, make_env, chosen, a.bus, user=a.user, password=a.password, token=a.token, creds=a.creds,
              session_ttl=a.session_ttl)
    except ConnectionError as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)
