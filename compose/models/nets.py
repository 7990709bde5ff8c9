"""Networks for the diffusion models of the experiments.

Every network here is called as `net(x, t)` with x of shape (N, *event_shape) and t an int64
tensor of shape (N,) holding levels in 1..T, and returns a tensor with the shape of x: the noise
prediction ε̂ in the score parameterisation, or f in the energy parameterisation
(g = ‖f − x‖², ε̂ = ∇_x g; docs/algebra.md §2). Each has `config()`, the keyword arguments that
rebuild it, so a checkpoint can name its architecture (see `compose.models.checkpoints`).
"""
from __future__ import annotations

import torch
from torch import nn


class _ResidualBlock(nn.Module):
    """h + Linear(SiLU(Linear(SiLU(Linear(SiLU(LayerNorm(h))) + Linear(e))))), last layer zero."""

    def __init__(self, hidden: int, inner: int, embed: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.inp = nn.Linear(hidden, inner)
        self.time = nn.Linear(embed, inner)
        self.mid = nn.Linear(inner, inner)
        self.out = nn.Linear(inner, hidden)
        # Zero-initialised: every block starts as the identity.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        a = self.inp(nn.functional.silu(self.norm(h))) + self.time(e)
        a = self.mid(nn.functional.silu(a))
        return h + self.out(nn.functional.silu(a))


class ResidualMLP(nn.Module):
    """The residual MLP of the 2D experiment (docs/experiments.md, section 1).

    A learned table of T time embeddings of width `embed` (row t − 1 for level t); input
    Linear(dim → hidden); `blocks` residual blocks, each
    LayerNorm → SiLU → Linear(hidden → inner) + Linear(embed → inner)(embedding) → SiLU →
    Linear(inner → inner) → SiLU → Linear(inner → hidden, zero-initialised), added to its input;
    output Linear(hidden → dim, zero-initialised), so the network outputs 0 at initialisation.
    With the defaults it has 565,506 parameters.

    Args:
        dim: dimension of x.
        T: number of noise levels (size of the embedding table).
        hidden, inner, embed: widths of the residual stream, of the blocks' inner layers and of
            the time embedding.
        blocks: number of residual blocks.
    """

    def __init__(self, dim: int = 2, T: int = 100, hidden: int = 128, inner: int = 256,
                 embed: int = 32, blocks: int = 4):
        super().__init__()
        for name, value in (("dim", dim), ("T", T), ("hidden", hidden), ("inner", inner),
                            ("embed", embed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer ≥ 1, got {value!r}")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"blocks: must be an integer ≥ 0, got {blocks!r}")
        self.dim, self.T, self.hidden, self.inner, self.embed, self.n_blocks = (
            dim, T, hidden, inner, embed, blocks)
        self.embedding = nn.Embedding(T, embed)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, inner, embed) for _ in range(blocks))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict:
        """The constructor's keyword arguments: `ResidualMLP(**net.config())` rebuilds the net."""
        return {"dim": self.dim, "T": self.T, "hidden": self.hidden, "inner": self.inner,
                "embed": self.embed, "blocks": self.n_blocks}

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (N, dim); t: int64 levels of shape (N,) (or one level for all) in 1..T → (N, dim)."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x: expected shape (N, {self.dim}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t: expected shape ({x.shape[0]},), got {tuple(t.shape)}")
        if t.device.type == "cpu" and t.numel() and not bool(((t >= 1) & (t <= self.T)).all()):
            raise ValueError(f"t: levels must lie in 1..{self.T}, got values from "
                             f"{int(t.min())} to {int(t.max())}")
        e = self.embedding(t.long() - 1)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h)
