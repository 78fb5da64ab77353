"""The same Qwen2 decoder as spa's model package, in PyTorch eager, for 'spa bench model'.

Reads a JSON job from argv[1] ({"config": {...}, "threads": N, "device": "cpu" or "cuda[:N]",
"train": [batch, seq, steps], "generate": [[batch, prompt, new], ...]}) and prints one JSON line of
results. It mirrors the Go measurement step for step: random tokens, forward + cross-entropy +
backward + AdamW for training; greedy decoding with a concatenating KV cache for generation, each
step's tokens read back to the host. On a GPU the clock stops only after torch.cuda.synchronize().
Debian's python3-torch uses the same libtorch as spa.
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        H, hd = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"]
        self.nh, self.nkv, self.hd, self.eps = c["num_attention_heads"], c["num_key_value_heads"], hd, c["rms_norm_eps"]
        self.inw = torch.nn.Parameter(torch.ones(H))
        self.postw = torch.nn.Parameter(torch.ones(H))
        self.q = torch.nn.Linear(H, self.nh * hd)
        self.k = torch.nn.Linear(H, self.nkv * hd)
        self.v = torch.nn.Linear(H, self.nkv * hd)
        self.o = torch.nn.Linear(self.nh * hd, H, bias=False)
        I = c["intermediate_size"]
        self.gate = torch.nn.Linear(H, I, bias=False)
        self.up = torch.nn.Linear(H, I, bias=False)
        self.down = torch.nn.Linear(I, H, bias=False)

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def forward(self, h, cos, sin, mask, cache):
        B, T, _ = h.shape
        x = self.norm(h, self.inw)
        q = self.q(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache is not None:
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[0], cache[1] = k, v
        rep = self.nh // self.nkv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        s = q @ k.transpose(-2, -1) / math.sqrt(self.hd) + mask
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
        h = h + self.o(a)
        x = self.norm(h, self.postw)
        return h + self.down(F.silu(self.gate(x)) * self.up(x))


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.blocks = torch.nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        self.normw = torch.nn.Parameter(torch.ones(c["hidden_size"]))
        hd = c["hidden_size"] // c["num_attention_heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(c["max_position_embeddings"]).float(), inv)
        emb = torch.cat([ang, ang], -1)
        # Buffers, so that .to(device) moves them with the weights.
        self.register_buffer("cos_t", emb.cos(), persistent=False)
        self.register_buffer("sin_t", emb.sin(), persistent=False)

    def hidden(self, ids, pos, mask, caches=None):
        cos, sin = self.cos_t[pos].unsqueeze(1), self.sin_t[pos].unsqueeze(1)
        h = self.embed(ids)
        for i, b in enumerate(self.blocks):
            h = b(h, cos, sin, mask, None if caches is None else caches[i])
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.c["rms_norm_eps"]) * self.normw

    def forward(self, ids, pos, mask, caches=None):
        return self.hidden(ids, pos, mask, caches) @ self.embed.weight.t()


def device_of(model):
    return model.embed.weight.device


def causal(T, P=0, device="cpu"):
    m = torch.full((T, P + T), -1e30, device=device)
    return torch.triu(m, diagonal=P + 1)[None, None]


def sync(device):
    """Waits for the device's queued kernels, so that a clock read afterwards measures them."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def train(model, B, T, steps):
    V, dev = model.c["vocab_size"], device_of(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    toks = torch.randint(0, V, (B, T + 1), generator=g).to(dev)
    ids, tgt = toks[:, :T], toks[:, 1:].reshape(-1)
    pos = torch.arange(T, device=dev).expand(B, T)
    mask = causal(T, device=dev)

    def step():
        loss = F.cross_entropy(model(ids, pos, mask).reshape(-1, V), tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed("train", step, B, T, steps, dev)


def timed(what, step, B, T, steps, device="cpu"):
    """Runs step once to warm up, then times steps of it over B sequences of T tokens."""
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    el = time.perf_counter() - t0
    return {"what": what, "batch": B, "tokens": B * T * steps, "seconds": el, "tokens_per_sec": B * T * steps / el}


@torch.no_grad()
def generate(model, B, P, N):
    V, dev = model.c["vocab_size"], device_of(model)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (B, P), generator=g).to(dev)
    caches = [[None, None] for _ in model.blocks]
    logits = model(ids, torch.arange(P, device=dev).expand(B, P), causal(P, device=dev), caches)
    nxt = logits[:, -1].argmax(-1, keepdim=True)
    nxt.tolist()
    t0 = time.perf_counter()
    for i in range(N):
        L = P + i
        logits = model(nxt, torch.full((B, 1), L, device=dev), torch.zeros(1, 1, 1, L + 1, device=dev), caches)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        nxt.tolist()  # a server reads each step's tokens, as spa's measurement does
    el = time.perf_counter() - t0
    return {"what": "generate", "batch": B, "tokens": B * N, "seconds": el, "tokens_per_sec": B * N / el}


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model = Model(job["config"])
    # spa's (and Hugging Face's) Qwen2 init: normal(0, 0.02) weights, zero biases.
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)
    model.to(job.get("device", "cpu"))
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": []}
    b, t, s = job["train"]
    out["results"].append(train(model, b, t, s))
    model.eval()
    for b, p, n in job["generate"]:
        out["results"].append(generate(model, b, p, n))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
