"""A PyTorch GPT of igpt's shape, the reference the CPU training benchmark measures against.

Same architecture as igpt.model.Transformer with its defaults: learned positions, pre-norm
blocks (LayerNorm with bias, bias-free q/k/v/out and MLP matmuls, GELU MLP of ratio 4), a
final norm and an untied head; a BOS row in the embedding. Attention is
F.scaled_dot_product_attention(is_causal=True), fp32. The optimiser matches igpt's:
global-norm clipping, then AdamW with weight decay on matrices only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.norm2 = nn.LayerNorm(width)
        self.w_in = nn.Linear(width, mlp_ratio * width, bias=False)
        self.w_out = nn.Linear(mlp_ratio * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b t (three h d) -> three b h t d",
                            three=3, h=self.heads)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(rearrange(o, "b h t d -> b t (h d)"))
        return x + self.w_out(F.gelu(self.w_in(self.norm2(x))))


class GPT(nn.Module):
    """tokens [b, t] (BOS-prefixed) -> logits [b, t, vocab]."""

    def __init__(self, vocab: int, seq_len: int, layers: int, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab + 1, width)
        self.pos = nn.Parameter(torch.randn(seq_len, width) * 0.01)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.ndim == 2 and name != "pos":
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers) if name.endswith(("out.weight", "w_out.weight"))
                                else 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))


def make_optimizer(model: nn.Module, lr: float = 3e-4) -> torch.optim.AdamW:
    """AdamW as igpt configures it: betas (0.9, 0.95), decay 0.1 on matrices only."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(model: GPT, opt: torch.optim.Optimizer, tokens: torch.Tensor, bos_id: int) -> torch.Tensor:
    """One full step: BOS-shifted inputs, mean cross-entropy, clip to norm 1, AdamW update."""
    inputs = torch.cat([torch.full_like(tokens[:, :1], bos_id), tokens[:, :-1]], dim=1)
    logits = model(inputs)
    loss = F.cross_entropy(rearrange(logits, "b t v -> (b t) v"), rearrange(tokens, "b t -> (b t)"))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss
