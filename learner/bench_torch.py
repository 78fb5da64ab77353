"""The learner's SFT and PPO steps in PyTorch eager, for 'spa bench learner'.

Reads a JSON job from argv[1] ({"config": {...}, "threads": N, "sft": [batch, seq, steps],
"ppo": [batch, prompt, response, steps]}) and prints one JSON line of results. The decoder is
model/bench_torch.py's (written next to this file). Each step mirrors spa's learner: hidden states
are projected to logits only at trained positions; AdamW with gradient clipping at 1.0; PPO scores
with the critic without gradients, takes GAE with gamma = lambda = 1 (return minus value), whitens
it, then updates the actor (clipped and dual-clipped surrogate, entropy bonus, token mean) and the
critic (clipped value loss) once each.
"""
import json
import sys

import torch
import torch.nn.functional as F

from bench_torch import Model, causal, timed


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


def batch(V, B, T, seed):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, V, (B, T), generator=g)
    return toks[:, :-1], toks[:, 1:], torch.arange(T - 1).expand(B, T - 1), causal(T - 1)


def selected_logits(model, ids, pos, mask, sel):
    h = model.hidden(ids, pos, mask)
    h = h.reshape(-1, h.shape[-1])[sel]
    return h @ model.embed.weight.t()


def sft(model, B, T, steps):
    V = model.c["vocab_size"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
    ids, tgt, pos, mask = batch(V, B, T, 1)
    # The assistant's tokens: the second half of each sequence.
    train = torch.zeros(B, T - 1, dtype=torch.bool)
    train[:, (T - 1) // 2:] = True
    sel = train.reshape(-1).nonzero().squeeze(-1)
    targets = tgt.reshape(-1)[sel]

    def step():
        loss = F.cross_entropy(selected_logits(model, ids, pos, mask, sel), targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return timed("sft", step, B, T, steps)


class Critic(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.trunk = Model(c)
        self.score = torch.nn.Linear(c["hidden_size"], 1)

    def values(self, ids, pos, mask, sel):
        h = self.trunk.hidden(ids, pos, mask)
        return self.score(h.reshape(-1, h.shape[-1])[sel]).squeeze(-1)


def ppo(actor, B, P, R, steps):
    c = actor.c
    V = c["vocab_size"]
    critic = hf_init(Critic(c))
    aopt = torch.optim.AdamW(actor.parameters(), lr=1e-6, betas=(0.9, 0.95), weight_decay=0.01)
    copt = torch.optim.AdamW(critic.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)
    T = P + R
    ids, tgt, pos, mask = batch(V, B, T, 2)
    train = torch.zeros(B, T - 1, dtype=torch.bool)
    train[:, P - 1:] = True
    sel = train.reshape(-1).nonzero().squeeze(-1)
    targets = tgt.reshape(-1)[sel]
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(sel.numel(), generator=g) * 8
    rewards = torch.rand(B, generator=g)

    def step():
        with torch.no_grad():
            v_old = critic.values(ids, pos, mask, sel)
            ret = rewards.repeat_interleave(R)
            adv = ret - v_old
            adv = (adv - adv.mean()) / torch.sqrt(adv.var(unbiased=False) + 1e-8)
        logits = selected_logits(actor, ids, pos, mask, sel)
        lsm = logits.log_softmax(-1)
        logp = lsm.gather(-1, targets[:, None]).squeeze(-1)
        ratio = (logp - old).exp()
        s1, s2 = -adv * ratio, -adv * ratio.clamp(0.8, 1.28)
        loss = torch.maximum(s1, s2)
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * 3.0), loss).mean()
        ent = -(lsm.exp() * lsm).sum(-1).mean()
        aopt.zero_grad()
        (loss - 0.001 * ent).backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        aopt.step()
        v = critic.values(ids, pos, mask, sel)
        vclip = v_old + (v - v_old).clamp(-0.5, 0.5)
        vloss = 0.5 * torch.maximum((v - ret) ** 2, (vclip - ret) ** 2).mean()
        copt.zero_grad()
        vloss.backward()
        torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
        copt.step()

    return timed("ppo", step, B, T, steps)


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": []}
    b, t, s = job["sft"]
    out["results"].append(sft(hf_init(Model(job["config"])), b, t, s))
    b, p, r, s = job["ppo"]
    out["results"].append(ppo(hf_init(Model(job["config"])), b, p, r, s))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
