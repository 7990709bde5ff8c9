"""The numbers of a tapestry run: `Settings`, the full run `DEFAULT` and the test run `QUICK`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple

from compose.experiments import digits
from compose.models.data import IMAGE_SHAPE, NUM_CLASSES
from compose.schedule import Schedule

#: The class label of the null condition (the unconditional model of classifier-free guidance).
NULL_CLASS = NUM_CLASSES
SAMPLER_NAMES = ("Reverse", "U-LA", "LA-3-line", "HMC-curve")


@dataclass(frozen=True)
class Settings:
    """Everything that sets the numbers of a run.

    Model: a diffusers ``UNet2DModel`` with `channels` per resolution, one ResNet block each, no
    attention, NUM_CLASSES + 1 class embeddings (the last is the null class), trained on the
    cosine schedule with T levels for `train_steps` Adam steps at `lr`, batch `batch_size`, EMA
    `ema_decay`, each label replaced by the null class with probability `null_probability`.
    Canvases: `canvases` (the digits of each, left to right), 8-column windows overlapping by
    `overlap`. Sampling: `chains` per canvas; U-LA and LA: K = `steps_per_level` steps per
    level, LA with `la_points` interior points on the line; HMC: `hmc_steps_per_level` steps of
    L = `num_leapfrog` leapfrog steps, `damping`, `mass`. Guidance: `scales` searched with
    `search_chains` chains per canvas. Tuning: `tune_chains` chains, `tune_steps_per_level`
    steps per level, exponents `tune_b_mala` and `tune_b_hmc`, at most `tune_trials` runs per b.
    Evaluation classifier: the digits experiment's, with `eval_width`, `eval_features`,
    `eval_steps`.
    """

    T: int = 20
    channels: Tuple[int, ...] = (16, 32)
    train_steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.995
    null_probability: float = 0.15
    canvases: Tuple[Tuple[int, ...], ...] = ((3, 7), (2, 5, 9))
    overlap: int = 2
    chains: int = 32
    steps_per_level: int = 15
    hmc_steps_per_level: int = 5
    num_leapfrog: int = 3
    damping: float = 0.5
    mass: float = 1.0
    la_points: int = 3
    scales: Tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
    search_chains: int = 32
    tune_chains: int = 16
    tune_steps_per_level: int = 2
    tune_b_mala: Tuple[float, ...] = (1.0, 1.5)
    tune_b_hmc: Tuple[float, ...] = (0.5, 1.0)
    tune_trials: int = 6
    eval_width: int = 32
    eval_features: int = 64
    eval_steps: int = 1500
    split_seed: int = 0

    def schedule(self) -> Schedule:
        """The cosine schedule with T levels."""
        return Schedule.cosine(self.T)

    def unet_config(self) -> dict:
        """The ``UNet2DModel`` keyword arguments."""
        levels = len(self.channels)
        return dict(sample_size=IMAGE_SHAPE[-1], in_channels=IMAGE_SHAPE[0],
                    out_channels=IMAGE_SHAPE[0], block_out_channels=tuple(self.channels),
                    layers_per_block=1, norm_num_groups=min(8, min(self.channels)),
                    add_attention=False, down_block_types=("DownBlock2D",) * levels,
                    up_block_types=("UpBlock2D",) * levels, num_class_embeds=NUM_CLASSES + 1)

    def digits_settings(self) -> "digits.Settings":
        """The digits experiment's settings that train its evaluation classifier."""
        return dataclasses.replace(digits.DEFAULT, eval_width=self.eval_width,
                                   eval_features=self.eval_features, eval_steps=self.eval_steps,
                                   split_seed=self.split_seed)


#: The full run (a few minutes of training, about ten of sampling on one shared CPU thread).
DEFAULT = Settings()
#: End to end in well under a minute: T = 4, a tiny UNet, a few dozen training steps.
QUICK = Settings(T=4, channels=(8, 8), train_steps=30, batch_size=32, ema_decay=0.5,
                 chains=4, steps_per_level=2, hmc_steps_per_level=1, scales=(1.0, 3.0),
                 search_chains=4, tune_chains=4, tune_steps_per_level=1, tune_b_mala=(1.0,),
                 tune_b_hmc=(1.0,), tune_trials=2, eval_width=8, eval_features=16,
                 eval_steps=30)
