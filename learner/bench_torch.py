"""The learner's SFT and PPO steps in PyTorch eager, for 'spa bench learner'.

Reads a JSON job from argv[1] ({"config": {...}, "threads": N, "device": D, "cases": [...]}) and
prints one JSON line of results, one per case in order; D is "cpu" or "cuda[:N]". A case is {"what":
"sft" or "ppo", "batch": B, "len": T, "spans": [[start, end], ...], "micro": M, "steps": S}: B
sequences of T random tokens whose tokens at positions start..end-1 of each span are trained (the
assistant's turns), in forward passes of at most M sequences whose gradients accumulate. The decoder
is model/bench_torch.py's (written next to this file). Each step mirrors spa's learner: hidden
states are projected to logits only at trained positions; AdamW with gradient clipping at 1.0; PPO
scores with the critic without gradients, takes GAE with gamma = lambda = 1 (return minus value),
whitens it, then updates the actor (clipped and dual-clipped surrogate, entropy bonus, token mean)
and the critic (clipped value loss) once each.
"""
import json
import sys

import torch
import torch.nn.functional as F

from bench_torch import Model, causal, device_of, timed


def hf_init(module):
    """Initialise as Hugging Face (and spa) initialise Qwen2: normal(0, 0.02) weights, zero biases.
    PyTorch's default init gives logits large enough that PPO ratios underflow into denormal
    gradients, which would time denormal arithmetic instead of the learner."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)
    return module


def batch(V, B, T, spans, seed, dev):
    """Inputs for B sequences of T tokens on dev and the flat indices of their trained targets."""
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, V, (B, T), generator=g).to(dev)
    train = torch.zeros(B, T - 1, dtype=torch.bool, device=dev)
    for start, end in spans:
        # Token j is predicted from position j - 1.
        train[:, start - 1:end - 1] = True
    return toks[:, :-1], toks[:, 1:], torch.arange(T - 1, device=dev).expand(B, T - 1), causal(T - 1, device=dev), train


def micro_batches(B, micro):
    m = micro if micro > 0 else B
    return [(i, min(B, i + m)) for i in range(0, B, m)]


def selected(ids, pos, tgt, train, lo, hi):
    """One micro-batch: its inputs, the flat indices of its trained positions and their targets."""
    sel = train[lo:hi].reshape(-1).nonzero().squeeze(-1)
    return ids[lo:hi], pos[lo:hi], sel, tgt[lo:hi].reshape(-1)[sel]


def selected_logits(model, ids, pos, mask, sel):
    h = model.hidden(ids, pos, mask)
    h = h.reshape(-1, h.shape[-1])[sel]
    return h @ model.embed.weight.t()


def sft(model, case):
    B, T, micro = case["batch"], case["len"], case["micro"]
    V, dev = model.c["vocab_size"], device_of(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
    ids, tgt, pos, mask, train = batch(V, B, T, case["spans"], 1, dev)
    total = int(train.sum())
    parts = [selected(ids, pos, tgt, train, lo, hi) for lo, hi in micro_batches(B, micro)]

    def step():
        opt.zero_grad()
        for i, p, sel, targets in parts:
            loss = F.cross_entropy(selected_logits(model, i, p, mask, sel), targets, reduction="sum") / total
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return timed("sft", step, B, T, case["steps"], dev)


class Critic(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.trunk = Model(c)
        self.score = torch.nn.Linear(c["hidden_size"], 1)

    def values(self, ids, pos, mask, sel):
        h = self.trunk.hidden(ids, pos, mask)
        return self.score(h.reshape(-1, h.shape[-1])[sel]).squeeze(-1)


def ppo(actor, case):
    B, T, micro = case["batch"], case["len"], case["micro"]
    c = actor.c
    V, dev = c["vocab_size"], device_of(actor)
    critic = hf_init(Critic(c)).to(dev)
    aopt = torch.optim.AdamW(actor.parameters(), lr=1e-6, betas=(0.9, 0.95), weight_decay=0.01)
    copt = torch.optim.AdamW(critic.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)
    ids, tgt, pos, mask, train = batch(V, B, T, case["spans"], 2, dev)
    parts = [selected(ids, pos, tgt, train, lo, hi) for lo, hi in micro_batches(B, micro)]
    total = int(train.sum())
    g = torch.Generator().manual_seed(3)
    old = (-torch.rand(total, generator=g) * 8).to(dev)
    rewards = torch.rand(B, generator=g).to(dev)
    ret = rewards.repeat_interleave(train.sum(-1))
    bounds = [0]
    for _, _, sel, _ in parts:
        bounds.append(bounds[-1] + sel.numel())

    def step():
        with torch.no_grad():
            v_old = torch.cat([critic.values(i, p, mask, sel) for i, p, sel, _ in parts])
            adv = ret - v_old
            adv = (adv - adv.mean()) / torch.sqrt(adv.var(unbiased=False) + 1e-8)
        aopt.zero_grad()
        for k, (i, p, sel, targets) in enumerate(parts):
            lo, hi = bounds[k], bounds[k + 1]
            a = adv[lo:hi]
            lsm = selected_logits(actor, i, p, mask, sel).log_softmax(-1)
            logp = lsm.gather(-1, targets[:, None]).squeeze(-1)
            ratio = (logp - old[lo:hi]).exp()
            s1, s2 = -a * ratio, -a * ratio.clamp(0.8, 1.28)
            loss = torch.maximum(s1, s2)
            loss = torch.where(a < 0, torch.minimum(loss, -a * 3.0), loss).sum() / total
            ent = -(lsm.exp() * lsm).sum() / total
            (loss - 0.001 * ent).backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        aopt.step()
        copt.zero_grad()
        for k, (i, p, sel, _) in enumerate(parts):
            lo, hi = bounds[k], bounds[k + 1]
            v = critic.values(i, p, mask, sel)
            vclip = v_old[lo:hi] + (v - v_old[lo:hi]).clamp(-0.5, 0.5)
            vloss = 0.5 * torch.maximum((v - ret[lo:hi]) ** 2, (vclip - ret[lo:hi]) ** 2).sum() / total
            vloss.backward()
        torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
        copt.step()

    return timed("ppo", step, B, T, case["steps"], dev)


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": []}
    for case in job["cases"]:
        run = sft if case["what"] == "sft" else ppo
        out["results"].append(run(hf_init(Model(job["config"])).to(job.get("device", "cpu")), case))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
