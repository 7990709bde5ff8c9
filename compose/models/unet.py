"""Small convolutional networks for 8×8 images.

- `SmallUNet`: a UNet for the diffusion models (Ho et al. 2020, much reduced): a sinusoidal
  embedding of the level t, GroupNorm + SiLU residual blocks, resolutions 8 → 4 → 8 with skip
  connections. Called as ``net(x, t)``; returns a tensor of the shape of x, read as ε̂ in the
  score parameterisation or as f in the energy parameterisation (g = ‖f − x‖², ε̂ = ∇_x g).
- `NoisyClassifier`: a noise-level-aware classifier p_t(y | x_t) for classifier guidance
  (Dhariwal & Nichol 2021), the UNet's encoder half with a pooled linear head.
- `DigitClassifier`: a plain CNN trained on clean images for evaluation; its penultimate layer
  (`features`) is the feature space of the Fréchet distance.

Every network has `config()`, the keyword arguments that rebuild it, and is registered in
`compose.models.checkpoints.ARCHITECTURES`, so `save_checkpoint` / `load_checkpoint` store
and check it with its schedule.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F



def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: must be an integer ≥ 1, got {value!r}")
    return int(value)


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of `channels` that is at most `groups` (GroupNorm needs one)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of levels t (N,) → (N, dim): [cos(t ω_i), sin(t ω_i)],
    ω_i = max_period^(−i/(dim/2)), i = 0..dim/2 − 1 (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                             device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


class ResBlock(nn.Module):
    """h ↦ skip(h) + Conv(SiLU(GN(Conv(SiLU(GN(h))) + W e))), the last conv zero-initialised.

    Args:
        cin, cout: input and output channels. embed: width of the level embedding e
            (0: no embedding). groups: GroupNorm groups (at most).
    """

    def __init__(self, cin: int, cout: int, embed: int, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(embed, cout) if embed else None
        self.norm2 = nn.GroupNorm(_groups(cout, groups), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: torch.Tensor, e: Optional[torch.Tensor] = None) -> torch.Tensor:
        a = self.conv1(F.silu(self.norm1(h)))
        if self.time is not None:
            a = a + self.time(e)[:, :, None, None]
        a = self.conv2(F.silu(self.norm2(a)))
        return self.skip(h) + a


class _LevelEmbedding(nn.Module):
    """t ↦ Linear(SiLU(Linear(sinusoidal(t)))), of width `embed`."""

    def __init__(self, base: int, embed: int):
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, embed), nn.SiLU(), nn.Linear(embed, embed))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        first = self.mlp[0].weight
        return self.mlp(timestep_embedding(t, self.base).to(first.dtype))


def _check_images(x: torch.Tensor, channels: int, size: int) -> None:
    if x.dim() != 4 or x.shape[1:] != (channels, size, size):
        raise ValueError(f"x: expected shape (N, {channels}, {size}, {size}), got {tuple(x.shape)}")


def _check_levels(t, x: torch.Tensor, T: int) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t: expected shape ({x.shape[0]},), got {tuple(t.shape)}")
    if t.device.type == "cpu" and t.numel() and not bool(((t >= 1) & (t <= T)).all()):
        raise ValueError(f"t: levels must lie in 1..{T}, got values from {int(t.min())} to "
                         f"{int(t.max())}")
    return t


class SmallUNet(nn.Module):
    """A small UNet for (N, channels, size, size) images at levels 1..T.

    Layout (defaults: base 32, mults (1, 2), one block per resolution, 8 → 4 → 8):
    Conv3×3(channels → base); down path: at each resolution `blocks` ResBlocks (kept as skips),
    then a stride-2 Conv3×3 except at the last; middle: one ResBlock; up path: at each
    resolution `blocks` ResBlocks on [h, skip] (concatenated), then nearest ×2 upsampling and a
    Conv3×3 except at the first; GroupNorm → SiLU → Conv3×3(→ channels), zero-initialised, so
    the output is 0 at initialisation. Every ResBlock gets the level embedding
    e = MLP(sinusoidal(t)) of width `embed`.

    Args:
        channels, size: image channels and side (size divisible by 2^(len(mults) − 1)).
        T: number of levels (recorded; t must lie in 1..T).
        base: channels at full resolution; resolution i has base · mults[i].
        mults: channel multipliers per resolution. blocks: ResBlocks per resolution.
        embed: width of the level embedding. groups: GroupNorm groups (at most).
        out_channels: output channels (default `channels`; 2 · channels for a prediction and a
            learned variance).
        num_classes: class-conditional: ``net(x, t, y=labels)`` adds a learned embedding of
            the label (N,) in 0..num_classes − 1 to the level embedding; y=None or
            y = num_classes is "no class" (classifier-free guidance's unconditional model).
    """

    def __init__(self, channels: int = 1, size: int = 8, T: int = 100, base: int = 32,
                 mults: Sequence[int] = (1, 2), blocks: int = 1, embed: int = 64,
                 groups: int = 8, out_channels: Optional[int] = None,
                 num_classes: Optional[int] = None):
        super().__init__()
        self.out_channels = channels if out_channels is None else positive_int("out_channels",
                                                                               out_channels)
        self.num_classes = None if num_classes is None else positive_int("num_classes", num_classes)
        self.class_embedding = (None if num_classes is None
                                else nn.Embedding(self.num_classes + 1, embed))
        for name, value in (("channels", channels), ("size", size), ("T", T), ("base", base),
                            ("blocks", blocks), ("embed", embed), ("groups", groups)):
            positive_int(name, value)
        mults = tuple(positive_int("mults", m) for m in mults)
        if not mults:
            raise ValueError("mults: need at least one resolution")
        if size % (2 ** (len(mults) - 1)):
            raise ValueError(f"size: {size} cannot be halved {len(mults) - 1} times")
        self.channels, self.size, self.T, self.base, self.mults = channels, size, T, base, mults
        self.n_blocks, self.embed, self.groups = blocks, embed, groups
        self.level_embedding = _LevelEmbedding(base, embed)
        self.inp = nn.Conv2d(channels, base, 3, padding=1)
        widths = [base * m for m in mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [], base
        for i, w in enumerate(widths):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(c, w, embed, groups))
                c = w
                skips.append(c)
            self.down.append(level)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(c, c, embed, groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(c + skips.pop(), w, embed, groups))
                c = w
            self.up.append(level)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(c, groups), c)
        self.out = nn.Conv2d(c, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict:
        """The constructor's keyword arguments: `SmallUNet(**net.config())` rebuilds the net."""
        config = {"channels": self.channels, "size": self.size, "T": self.T, "base": self.base,
                  "mults": list(self.mults), "blocks": self.n_blocks, "embed": self.embed,
                  "groups": self.groups}
        if self.out_channels != self.channels:
            config["out_channels"] = self.out_channels
        if self.num_classes is not None:
            config["num_classes"] = self.num_classes
        return config

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (N, channels, size, size); t: int64 levels (N,) in 1..T; y: class labels (N,)
        of a class-conditional net (None: no class) → (N, out_channels, size, size)."""
        _check_images(x, self.channels, self.size)
        e = self.level_embedding(_check_levels(t, x, self.T))
        if self.class_embedding is not None:
            e = e + self.class_embedding(self._labels(y, x))
        elif y is not None:
            raise ValueError("y: this SmallUNet is not class-conditional (num_classes=None)")
        h = self.inp(x)
        skips = []
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, e)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, e)
        for i, level in enumerate(self.up):
            for block in level:
                h = block(torch.cat([h, skips.pop()], dim=1), e)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


    def _labels(self, y: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Labels (N,) in 0..num_classes, num_classes where y is None ("no class")."""
        if y is None:
            return torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        y = torch.as_tensor(y, device=x.device)
        if y.dim() == 0:
            y = y.expand(x.shape[0])
        if y.shape != (x.shape[0],) or y.is_floating_point():
            raise ValueError(f"y: expected integer labels of shape ({x.shape[0]},), got "
                             f"{y.dtype} of shape {tuple(y.shape)}")
        if y.device.type == "cpu" and y.numel() and not bool(((y >= 0) & (y <= self.num_classes)).all()):
            raise ValueError(f"y: labels must lie in 0..{self.num_classes} ({self.num_classes}: "
                             f"no class), got values from {int(y.min())} to {int(y.max())}")
        return y.long()


class NoisyClassifier(nn.Module):
    """A noise-level-aware classifier p_t(y | x_t): logits (N, num_classes) from ``net(x, t)``.

    Conv3×3(channels → base); at each resolution `blocks` ResBlocks with the level embedding,
    a stride-2 Conv3×3 between resolutions; GroupNorm → SiLU → mean over pixels →
    Linear(→ num_classes).

    Args:
        channels, size, T, base, mults, blocks, embed, groups: as for `SmallUNet`.
        num_classes: number of classes.
    """

    def __init__(self, channels: int = 1, size: int = 8, T: int = 100, num_classes: int = 10,
                 base: int = 32, mults: Sequence[int] = (1, 2), blocks: int = 1,
                 embed: int = 64, groups: int = 8):
        super().__init__()
        for name, value in (("channels", channels), ("size", size), ("T", T),
                            ("num_classes", num_classes), ("base", base), ("blocks", blocks),
                            ("embed", embed), ("groups", groups)):
            positive_int(name, value)
        mults = tuple(positive_int("mults", m) for m in mults)
        if not mults or size % (2 ** (len(mults) - 1)):
            raise ValueError(f"mults: {list(mults)} does not fit images of size {size}")
        self.channels, self.size, self.T, self.num_classes = channels, size, T, num_classes
        self.base, self.mults, self.n_blocks, self.embed, self.groups = (base, mults, blocks,
                                                                         embed, groups)
        self.level_embedding = _LevelEmbedding(base, embed)
        self.inp = nn.Conv2d(channels, base, 3, padding=1)
        self.levels, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = base
        for i, m in enumerate(mults):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(c, base * m, embed, groups))
                c = base * m
            self.levels.append(level)
            if i < len(mults) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.out_norm = nn.GroupNorm(_groups(c, groups), c)
        self.head = nn.Linear(c, num_classes)

    def config(self) -> dict:
        """The constructor's keyword arguments."""
        return {"channels": self.channels, "size": self.size, "T": self.T,
                "num_classes": self.num_classes, "base": self.base, "mults": list(self.mults),
                "blocks": self.n_blocks, "embed": self.embed, "groups": self.groups}

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (N, channels, size, size); t: int64 levels (N,) in 1..T → logits (N, num_classes)."""
        _check_images(x, self.channels, self.size)
        e = self.level_embedding(_check_levels(t, x, self.T))
        h = self.inp(x)
        for i, level in enumerate(self.levels):
            for block in level:
                h = block(h, e)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        return self.head(F.silu(self.out_norm(h)).mean(dim=(2, 3)))


class DigitClassifier(nn.Module):
    """A CNN on clean images, for evaluation: ``net(x)`` → logits (N, num_classes).

    Conv3×3(channels → width) → SiLU → Conv3×3(width → width) → SiLU → 2×2 max-pool →
    Conv3×3(width → 2·width) → SiLU → mean over pixels → Linear(2·width → features) → SiLU
    [= `features(x)`, the penultimate layer] → Dropout(dropout) → Linear(features → classes).

    Args:
        channels, size: image channels and side. num_classes: classes.
        width: channels of the first convolutions. features: width of the penultimate layer.
        dropout: dropout probability before the last layer (training only).
    """

    def __init__(self, channels: int = 1, size: int = 8, num_classes: int = 10, width: int = 32,
                 features: int = 64, dropout: float = 0.2):
        super().__init__()
        for name, value in (("channels", channels), ("size", size), ("num_classes", num_classes),
                            ("width", width), ("features", features)):
            positive_int(name, value)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must lie in [0, 1), got {dropout!r}")
        self.channels, self.size, self.num_classes = channels, size, num_classes
        self.width, self.n_features, self.dropout = width, features, float(dropout)
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.SiLU())
        self.penultimate = nn.Sequential(nn.Linear(2 * width, features), nn.SiLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def config(self) -> dict:
        """The constructor's keyword arguments."""
        return {"channels": self.channels, "size": self.size, "num_classes": self.num_classes,
                "width": self.width, "features": self.n_features, "dropout": self.dropout}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer, (N, features): the feature space of the Fréchet distance."""
        _check_images(x, self.channels, self.size)
        return self.penultimate(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, channels, size, size) → logits (N, num_classes)."""
        return self.head(self.features(x))


# -- training the classifiers ---------------------------------------------------------------
