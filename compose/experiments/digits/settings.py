"""Settings of the digits experiment: the reduced real run and a quick variant (docs/experiments.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from compose.models.data import IMAGE_SHAPE, NUM_CLASSES
from compose.schedule import Schedule


PARAMETERISATIONS = ("score", "energy")


SAMPLER_NAMES = ("Reverse", "U-LA", "LA-8-line", "U-HMC", "HMC-3-curve")


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sets the numbers of a run.

    Schedule: cosine, T levels. Diffusion models: `SmallUNet(base, mults, blocks, embed)`,
    `train_steps` Adam steps at `lr`, batch `batch_size`, EMA `ema_decay`. Guidance classifier:
    `NoisyClassifier(clf_base, mults)`, `clf_steps` AdamW steps. Evaluation classifier:
    `DigitClassifier(eval_width, eval_features)`, `eval_steps` steps. Sampling:
    `samples_per_class` chains per class, K = `steps_per_level` MCMC steps per level, L =
    `num_leapfrog`, `damping`, `mass`; Δ of the score model with `la_points` points on the line
    (LA) and `curve_points` per leapfrog segment (HMC). Tuning: `tune_chains` chains,
    `tune_steps_per_level` steps per level, exponents b from `tune_b_mala` (LA) and
    `tune_b_hmc` (HMC), at most `tune_trials` runs per b. (A Langevin step η should scale like
    the variance of π_t, an HMC step ε like its standard deviation, hence the two grids.)
    """

    T: int = 40
    base: int = 16
    mults: Tuple[int, ...] = (1, 2)
    blocks: int = 1
    embed: int = 64
    train_steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.995
    clf_base: int = 16
    clf_steps: int = 1500
    eval_width: int = 32
    eval_features: int = 64
    eval_steps: int = 1500
    classifier_batch: int = 128
    classifier_lr: float = 2e-3
    samples_per_class: int = 20
    steps_per_level: int = 2
    num_leapfrog: int = 3
    damping: float = 0.5
    mass: float = 1.0
    la_points: int = 8
    curve_points: int = 1
    tune_chains: int = 20
    tune_steps_per_level: int = 1
    tune_b_mala: Tuple[float, ...] = (1.0, 1.5, 2.0)
    tune_b_hmc: Tuple[float, ...] = (0.5, 1.0, 1.5)
    tune_trials: int = 8
    split_seed: int = 0

    def schedule(self) -> Schedule:
        """The cosine schedule with T levels."""
        return Schedule.cosine(self.T)

    def unet_config(self) -> dict:
        return {"channels": IMAGE_SHAPE[0], "size": IMAGE_SHAPE[1], "T": self.T,
                "base": self.base, "mults": list(self.mults), "blocks": self.blocks,
                "embed": self.embed, "groups": 8}

    def classifier_config(self) -> dict:
        return {"channels": IMAGE_SHAPE[0], "size": IMAGE_SHAPE[1], "T": self.T,
                "num_classes": NUM_CLASSES, "base": self.clf_base, "mults": list(self.mults),
                "blocks": 1, "embed": self.embed, "groups": 8}

    def eval_config(self) -> dict:
        return {"channels": IMAGE_SHAPE[0], "size": IMAGE_SHAPE[1], "num_classes": NUM_CLASSES,
                "width": self.eval_width, "features": self.eval_features, "dropout": 0.2}


#: The reduced real run (about half an hour on one thread of a shared 2-core CPU).
DEFAULT = Settings()


#: End-to-end in seconds: T = 5, tiny nets, a few dozen training steps, 2 samples per class.
QUICK = Settings(T=5, base=8, embed=16, train_steps=20, batch_size=32, ema_decay=0.5,
                 clf_base=8, clf_steps=20, eval_width=8, eval_features=16, eval_steps=30,
                 classifier_batch=64, samples_per_class=2, steps_per_level=1, tune_chains=10,
                 tune_b_mala=(1.0,), tune_b_hmc=(1.0,), tune_trials=2)
