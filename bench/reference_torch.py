"""PyTorch twins of bench/train.ts's training steps, for side-by-side step times.

reference: vocab 512, width 128, 4 layers, 4 heads, FF 512, batch 32, sequence 96, pre-LN,
  GELU (tanh), bidirectional attention, cross-entropy on every position, Adam.
small: the `small` preset of src/model/config.ts (vocab 300): a ViT tower (16 px patches of a
  48 px image, width 96, 2 layers, 4 heads, FF 256), a 2-layer GELU projector, and the language
  model (width 128, 4 layers, 4 heads, FF 512) over 9 image + 8 prompt + 96 response tokens with
  an additive key mask, weighted cross-entropy on the response, AdamW with gradient clipping at 1.

Usage: reference_torch.py STEPS [reference|small]. Prints one JSON line per thread count.
"""
import json, math, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
MODE = sys.argv[2] if len(sys.argv) > 2 else "reference"


class Block(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.d, self.heads = d, heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x, bias=None):
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.view(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        if bias is not None:
            scores = scores + bias
        a = torch.softmax(scores, dim=-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Reference(nn.Module):
    V, D, LAYERS, H, FF, B, T = 512, 128, 4, 4, 512, 32, 96

    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(self.V, self.D), nn.Parameter(torch.randn(self.T, self.D) * 0.02)
        self.blocks = nn.ModuleList([Block(self.D, self.H, self.FF) for _ in range(self.LAYERS)])
        self.ln, self.head = nn.LayerNorm(self.D), nn.Linear(self.D, self.V)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))

    def batch(self):
        ids = torch.randint(0, self.V, (self.B, self.T))
        tgt = torch.randint(0, self.V, (self.B * self.T,))
        return ids, tgt

    def loss(self, batch):
        ids, tgt = batch
        return F.cross_entropy(self(ids).view(-1, self.V), tgt)


class Small(nn.Module):
    V, B, NP, PATCH = 300, 32, 9, 16 * 16 * 3
    DV, VLAYERS, VHEADS, VFF = 96, 2, 4, 256
    D, LAYERS, H, FF = 128, 4, 4, 512
    PROMPT, L = 8, 96
    T = NP + PROMPT + L

    def __init__(self):
        super().__init__()
        self.patch, self.vpos = nn.Linear(self.PATCH, self.DV), nn.Parameter(torch.randn(self.NP, self.DV) * 0.02)
        self.vblocks = nn.ModuleList([Block(self.DV, self.VHEADS, self.VFF) for _ in range(self.VLAYERS)])
        self.vln = nn.LayerNorm(self.DV)
        self.fc1, self.fc2 = nn.Linear(self.DV, self.D), nn.Linear(self.D, self.D)
        self.tok, self.pos = nn.Embedding(self.V, self.D), nn.Parameter(torch.randn(self.T, self.D) * 0.02)
        self.blocks = nn.ModuleList([Block(self.D, self.H, self.FF) for _ in range(self.LAYERS)])
        self.ln, self.head = nn.LayerNorm(self.D), nn.Linear(self.D, self.V)

    def forward(self, patches, tokens, bias):
        x = self.patch(patches) + self.vpos
        for blk in self.vblocks:
            x = blk(x)
        image = self.fc2(F.gelu(self.fc1(self.vln(x)), approximate="tanh"))
        x = torch.cat([image, self.tok(tokens)], 1) + self.pos
        for blk in self.blocks:
            x = blk(x, bias)
        return self.head(self.ln(x[:, self.NP + self.PROMPT :]))

    def batch(self):
        patches = torch.rand(self.B, self.NP, self.PATCH)
        tokens = torch.randint(4, self.V, (self.B, self.PROMPT + self.L))
        bias = torch.zeros(self.B, 1, 1, self.T)
        bias[:, :, :, self.NP : self.NP + 5] = -1e9  # left-padded prompt keys
        tgt = torch.randint(0, self.V, (self.B * self.L,))
        w = torch.rand(self.B * self.L) / (self.B * self.L)
        return patches, tokens, bias, tgt, w

    def loss(self, batch):
        patches, tokens, bias, tgt, w = batch
        logits = self(patches, tokens, bias).reshape(-1, self.V)
        return (F.cross_entropy(logits, tgt, reduction="none") * w).sum()


def run(threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Reference() if MODE == "reference" else Small()
    if MODE == "reference":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    batch = model.batch()
    times = []
    for i in range(STEPS + 3):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        if MODE == "small":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


for threads in (1, 2):
    print(
        json.dumps({"mode": MODE, "threads": threads, "ms_per_step": run(threads), "torch": torch.__version__}),
        flush=True,
    )
