// Corridor: a spa environment written in JavaScript. It joins the bus as an ordinary NATS
// subscriber and speaks spa's environment protocol (docs/bus-protocol.md), so spa's agents play it
// exactly as they play the built-in Go environments. Nothing in spa knows about this file.
//
//   node corridor.mjs --server nats://127.0.0.1:4222 [--user U --pass P | --token T]
//
// The agent (P) walks a one-row corridor to the goal (G) with Left and Right; it has 10 actions.

import { connect } from "nats";
import { randomBytes } from "node:crypto";

const PROTOCOL = 1;
const ENV = "corridor";
const MAX_SEED = Number.MAX_SAFE_INTEGER; // 2^53-1: every JSON reader gets it exactly
const MAX_ACTION_BYTES = 4096;
const SESSION_TTL_MS = 10 * 60 * 1000;
const VARIANTS = { "7": 7, "12": 12 }; // corridor lengths; the first is the default
const DEFAULT_VARIANT = "7";

function spec(variant) {
  return {
    name: ENV,
    variant,
    description: `walk a ${VARIANTS[variant]}-cell corridor to the goal`,
    instructions: "You are in a corridor. Reach the goal G by moving Left or Right.",
    world_model_instructions: "Describe where P and G are, and predict where P will be after your actions.",
    legend: "P: you. G: goal. _: floor. #: wall.",
    actions: ["Left", "Right"],
    action_format: "",
    max_actions: 10,
    render_modes: ["raw", "coords"],
  };
}

// mulberry32: a tiny seeded PRNG, so a seed always gives the same corridor.
function rng(seed) {
  let a = seed % 4294967296 >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Corridor {
  constructor(variant, seed) {
    this.variant = variant;
    this.length = VARIANTS[variant];
    const r = rng(seed);
    this.goal = Math.floor(r() * this.length);
    do {
      this.player = Math.floor(r() * this.length);
    } while (this.player === this.goal);
    this.used = 0;
    this.done = false;
  }

  render() {
    const cells = Array.from({ length: this.length }, (_, i) =>
      i === this.player ? "P" : i === this.goal ? "G" : "_");
    const raw = "#" + cells.join("") + "#";
    return { raw, coords: `${raw}\nYou are at column ${this.player + 1}; the goal is at column ${this.goal + 1}.` };
  }

  step(action) {
    const move = { left: -1, right: 1 }[action.trim().toLowerCase()];
    if (move === undefined) return { reward: 0, done: false, success: false, valid: false };
    this.player = Math.min(this.length - 1, Math.max(0, this.player + move));
    this.used++;
    const success = this.player === this.goal;
    this.done = success || this.used >= 10;
    return { reward: success ? 1 : 0, done: this.done, success, valid: true };
  }
}

const fail = (code, message) => ({ protocol: PROTOCOL, error: { code, message } });

// parse decodes a request and checks the protocol version; it returns [body, null] or [null, errorReply].
function parse(data) {
  let body;
  try {
    body = JSON.parse(new TextDecoder().decode(data));
  } catch (e) {
    return [null, fail("bad_request", `malformed JSON: ${e.message}`)];
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    return [null, fail("bad_request", "malformed JSON: the body must be an object")];
  }
  if (body.protocol === undefined) return [null, fail("bad_request", `missing "protocol" (this host speaks ${PROTOCOL})`)];
  if (body.protocol !== PROTOCOL) {
    return [null, fail("unsupported_protocol", `protocol ${body.protocol} requested; this host speaks ${PROTOCOL}`)];
  }
  return [body, null];
}

function variantOf(body) {
  const v = body.variant ?? "";
  if (v === "") return [DEFAULT_VARIANT, null];
  if (typeof v !== "string") return [null, fail("bad_request", "\"variant\" must be a string")];
  if (!(v in VARIANTS)) return [null, fail("unknown_variant", `corridor host serves variants ${Object.keys(VARIANTS).join(", ")}, not "${v}"`)];
  return [v, null];
}

function args() {
  const out = { server: "nats://127.0.0.1:4222" };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  return out;
}

async function main() {
  const opts = args();
  const nc = await connect({ servers: opts.server, user: opts.user, pass: opts.pass, token: opts.token, name: "corridor-node" });
  const hostId = "node" + randomBytes(6).toString("hex");
  const prefix = `spa.env.${ENV}.host.${hostId}`;
  const sessions = new Map(); // id -> { env, lastUsed }
  let next = 0;

  const serve = (subject, queue, handler) =>
    nc.subscribe(subject, {
      queue,
      callback: (err, msg) => {
        if (err) return;
        let reply;
        try {
          reply = handler(msg);
        } catch (e) {
          reply = fail("internal", String(e));
        }
        if (msg.reply) msg.respond(JSON.stringify(reply));
      },
    });

  const queue = `spa.env.${ENV}`;
  // Every host answers "who is serving?" (spa env list --bus); no queue group, so all answer.
  serve("spa.env.hosts", undefined, () => ({
    protocol: PROTOCOL, env: ENV, host: hostId, variants: Object.keys(VARIANTS), sessions: sessions.size, runtime: "node",
  }));
  serve(`spa.env.${ENV}.spec`, queue, (msg) => {
    const [body, bad] = parse(msg.data);
    if (bad) return bad;
    const [variant, badVariant] = variantOf(body);
    if (badVariant) return badVariant;
    return { protocol: PROTOCOL, spec: spec(variant) };
  });

  // Seeds are checked the same way for reset and explore: an integer in [0, MAX_SEED].
  function checkSeed(seed) {
    if (seed === undefined || seed === null) return fail("bad_seed", "missing \"seed\"");
    if (typeof seed !== "number") return fail("bad_seed", `seed ${JSON.stringify(seed)} is not a number`);
    if (!Number.isInteger(seed)) return fail("bad_seed", `seed ${seed} is not an integer in [0, ${MAX_SEED}]`);
    if (seed < 0 || seed > MAX_SEED) return fail("bad_seed", `seed ${seed} is outside [0, ${MAX_SEED}]`);
    return null;
  }

  serve(`spa.env.${ENV}.reset`, queue, (msg) => {
    const [body, bad] = parse(msg.data);
    if (bad) return bad;
    const seed = body.seed;
    const badSeed = checkSeed(seed);
    if (badSeed) return badSeed;
    const [variant, badVariant] = variantOf(body);
    if (badVariant) return badVariant;
    const id = `${hostId}-${(++next).toString(36)}`;
    const env = new Corridor(variant, seed);
    sessions.set(id, { env, lastUsed: Date.now() });
    return { protocol: PROTOCOL, session: id, subject: prefix, variant, observation: env.render(), ttl_ms: SESSION_TTL_MS, explore: true };
  });

  serve(`${prefix}.*`, undefined, (msg) => {
    const op = msg.subject.slice(prefix.length + 1);
    const [body, bad] = parse(msg.data);
    if (bad) return bad;
    if (!["step", "close", "explore"].includes(op)) {
      return fail("unknown_op", `unknown operation "${op}" (this host answers step, close, explore)`);
    }
    if (op === "step") {
      if (typeof body.action !== "string") return fail("bad_action", "\"action\" must be a JSON string");
      if (Buffer.byteLength(body.action) > MAX_ACTION_BYTES) {
        return fail("bad_action", `action is ${Buffer.byteLength(body.action)} bytes; the limit is ${MAX_ACTION_BYTES}`);
      }
    }
    const s = sessions.get(body.session);
    if (!s) return fail("unknown_session", `no session "${body.session}" on host ${hostId}`);
    s.lastUsed = Date.now();
    if (op === "close") {
      sessions.delete(body.session);
      return { protocol: PROTOCOL };
    }
    if (op === "explore") {
      const badSeed = checkSeed(body.seed);
      if (badSeed) return badSeed;
      const r = rng(body.seed);
      return { protocol: PROTOCOL, action: r() < 0.5 ? "Left" : "Right" };
    }
    if (s.env.done) return fail("episode_done", `session ${body.session}: the episode has ended; reset for a new one`);
    const result = s.env.step(body.action);
    return { protocol: PROTOCOL, ...result, observation: s.env.render() };
  });

  // Abandoned episodes expire, so a crashed agent cannot make the host grow forever.
  setInterval(() => {
    const cutoff = Date.now() - SESSION_TTL_MS;
    for (const [id, s] of sessions) if (s.lastUsed < cutoff) sessions.delete(id);
  }, SESSION_TTL_MS / 4).unref();

  await nc.flush();
  console.log(`ready ${ENV} host ${hostId} on ${nc.getServer()}`);
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, async () => { await nc.drain(); process.exit(0); });
  await nc.closed();
}

main().catch((e) => {
  console.error(`corridor: ${e.message}`);
  process.exit(1);
});
