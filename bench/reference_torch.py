"""The reference transformer of bench/train.ts in PyTorch, for a side-by-side step time.

vocab 512, width 128, 4 layers, 4 heads, FF 512, batch 32, sequence 96, pre-LN, GELU (tanh),
bidirectional attention, cross-entropy on every position, Adam. Prints JSON lines.
"""
import json, math, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

V, D, LAYERS, H, FF, B, T = 512, 128, 4, 4, 512, 32, 96
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 30


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.out = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc, self.proj = nn.Linear(D, FF), nn.Linear(FF, D)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(b, n, H, D // H).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Parameter(torch.randn(T, D) * 0.02)
        self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.ln, self.head = nn.LayerNorm(D), nn.Linear(D, V)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def run(threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(0, V, (B, T))
    tgt = torch.randint(0, V, (B, T))
    times = []
    for i in range(STEPS + 3):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(ids).view(-1, V), tgt.view(-1))
        loss.backward()
        opt.step()
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[len(times) // 2]


for threads in (1, 2):
    print(json.dumps({"threads": threads, "ms_per_step": run(threads), "torch": torch.__version__}), flush=True)
