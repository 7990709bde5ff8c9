"""Settings of the 2D product experiment: the paper's values and a quick variant
(docs/experiments.md, section 1)."""
from __future__ import annotations

from dataclasses import dataclass

from compose.schedule import Schedule


BLOCKS = ("oracle", "score", "energy")


PARAMETERISATIONS = ("score", "energy")


COMPONENT_NAMES = ("ring", "bar")


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sets the numbers of a run (the paper's values by default).

    Schedule: cosine with T levels. Training: `train_steps` Adam steps at `lr` on batches of
    `batch_size` fresh samples, EMA decay `ema_decay`, a `ResidualMLP(hidden, inner, embed,
    blocks)`. Sampling: `num_samples` chains, K = `steps_per_level` MCMC steps per level,
    η = `la_step` for (U-)LA, ε = `hmc_step`, L = `num_leapfrog`, `damping`, `mass` for (U-)HMC,
    momentum negated on rejection when `negate_on_reject` (the exact form; the published code
    keeps +v').
    """

    T: int = 100
    steps_per_level: int = 10
    num_samples: int = 2000
    train_steps: int = 15001
    batch_size: int = 2000
    lr: float = 1e-3
    ema_decay: float = 0.999
    hidden: int = 128
    inner: int = 256
    embed: int = 32
    blocks: int = 4
    la_step: float = 0.001
    hmc_step: float = 0.03
    num_leapfrog: int = 3
    damping: float = 0.5
    mass: float = 1.0
    negate_on_reject: bool = True

    def schedule(self) -> Schedule:
        """The cosine schedule with T levels."""
        return Schedule.cosine(self.T)

    def net_config(self) -> dict:
        """Keyword arguments of the `ResidualMLP` of every model."""
        return {"dim": 2, "T": self.T, "hidden": self.hidden, "inner": self.inner,
                "embed": self.embed, "blocks": self.blocks}

    def train_config(self) -> dict:
        """The training settings recorded in (and matched against) each checkpoint."""
        return {"steps": self.train_steps, "batch_size": self.batch_size, "lr": self.lr,
                "ema_decay": self.ema_decay}

    def is_paper_sampling(self) -> bool:
        """Whether T, K and L are the paper's (so evaluation counts compare with its code)."""
        return self.T == 100 and self.steps_per_level == 10 and self.num_leapfrog == 3


#: The paper's settings (docs/experiments.md, section 1).
PAPER = Settings()


#: Small enough for an end-to-end test in seconds: T = 10, 300 training steps of tiny networks
#: (EMA decay 0.95 so the EMA weights have left their zero-output initialisation), 200 chains.
QUICK = Settings(T=10, num_samples=200, train_steps=300, batch_size=256, ema_decay=0.95,
                 hidden=32, inner=64, embed=8, blocks=2)
