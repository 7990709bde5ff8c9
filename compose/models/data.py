"""The 8×8 handwritten digits that scikit-learn ships, as images for diffusion
(docs/experiments.md, section 2).

`sklearn.datasets.load_digits` holds 1797 grey-scale 8×8 images with pixel values 0..16 and
their classes 0..9; it is bundled with scikit-learn, so nothing is downloaded. Here every pixel
is mapped to [−1, 1] by x ↦ x / 8 − 1, the images get a channel axis, shape (N, 1, 8, 8), and
a fixed stratified split (seeded) separates the training images from the held-out ones.

    split = digits_split()                       # 1347 training, 450 held-out images
    data = split.sampler()                       # data(n, generator) → (n, 1, 8, 8)
    train_diffusion(net, schedule, data, ...)
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

#: Shape of one image: one channel of 8×8 pixels.
IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _raw_digits() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def load_digit_images() -> Tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits: (images (1797, 1, 8, 8) float32 in [−1, 1], labels (1797,) int64).

    Pixels p ∈ {0, …, 16} become x = p / 8 − 1, so 0 ↦ −1 (background) and 16 ↦ 1.
    """
    images, labels = _raw_digits()
    x = torch.from_numpy(images / 8.0 - 1.0).float().reshape((-1,) + IMAGE_SHAPE)
    return x, torch.from_numpy(labels.copy())


@dataclass(frozen=True)
class DigitsSplit:
    """A train/held-out split of the digits, every tensor on one device.

    Attributes:
        train_images, train_labels: (n_train, 1, 8, 8) float32 in [−1, 1] and (n_train,) int64.
        test_images, test_labels: the held-out images and labels, likewise.
        seed: the seed of the split.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    seed: int

    def to(self, device) -> "DigitsSplit":
        """The same split with every tensor on `device`."""
        return DigitsSplit(self.train_images.to(device), self.train_labels.to(device),
                           self.test_images.to(device), self.test_labels.to(device), self.seed)

    def sampler(self, labelled: bool = False) -> Callable:
        """`data(n, generator)`: n training images drawn uniformly with replacement.

        Returns images of shape (n, 1, 8, 8) on the split's device, or with `labelled`,
        (images, labels). Indices are drawn with `generator` (on its own device), so a run is
        reproducible from the generator's seed.
        """
        return image_sampler(self.train_images, self.train_labels if labelled else None)


def image_sampler(images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Callable:
    """`data(n, generator)` drawing n rows of `images` (and of `labels`, if given) uniformly with
    replacement, on the device of `images`."""
    if images.dim() < 2 or images.shape[0] < 1:
        raise ValueError(f"images: expected shape (N, ...) with N ≥ 1, got {tuple(images.shape)}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}")

    def data(n: int, generator: Optional[torch.Generator] = None):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n: number of samples must be an integer ≥ 1, got {n!r}")
        device = generator.device if generator is not None else images.device
        index = torch.randint(images.shape[0], (int(n),), generator=generator,
                              device=device).to(images.device)
        return images[index] if labels is None else (images[index], labels[index])

    return data


def digits_split(test_fraction: float = 0.25, seed: int = 0, device=None) -> DigitsSplit:
    """The fixed split: a stratified `test_fraction` of each class held out, chosen by `seed`.

    With the defaults: 1347 training and 450 held-out images (scikit-learn's
    `train_test_split(..., stratify=labels, random_state=seed)`).
    """
    from sklearn.model_selection import train_test_split
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: must lie in (0, 1), got {test_fraction!r}")
    images, labels = load_digit_images()
    index = np.arange(labels.shape[0])
    train, test = train_test_split(index, test_size=test_fraction, stratify=labels.numpy(),
                                   random_state=int(seed))
    train, test = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))
    split = DigitsSplit(images[train], labels[train], images[test], labels[test], int(seed))
    return split.to(device) if device is not None else split
