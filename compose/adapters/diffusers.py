"""A diffusers ``UNet2DModel`` and its DDPM-style scheduler as a `compose.ScoreModel`.

Only discrete variance-preserving models are supported (docs/algebra.md, section 1): the scheduler's
β_1..β_T become our `Schedule`, and the network's output is turned into a noise prediction ε̂,
so the score is the usual s_t(x) = −ε̂(x, t) / σ_t.

Timesteps. diffusers indexes training timesteps from 0: its timestep k noises with
ᾱ_k = cumprod(1 − β)[k] (0-based), which is our level k + 1. So our level t = 1..T calls the
UNet with timestep t − 1, and our ᾱ_t equals ``scheduler.alphas_cumprod[t − 1]``.

Prediction types, with x_t = √ᾱ_t x_0 + σ_t ε and σ_t² = 1 − ᾱ_t:

    "epsilon"        output ε̂                    ε̂ = output
    "v_prediction"   v = √ᾱ_t ε − σ_t x_0         ε̂ = √ᾱ_t v + σ_t x_t
    "sample"         x̂_0                          ε̂ = (x_t − √ᾱ_t x̂_0) / σ_t

(The v line: substituting x_0 = (x_t − σ_t ε)/√ᾱ_t into v gives v = (ε − σ_t x_t)/√ᾱ_t,
using ᾱ_t + σ_t² = 1.)

Learned variance (Nichol & Dhariwal 2021): a UNet with twice the input channels predicts the
variance in its second half; only the first half (the ε/v/x_0 prediction) is used.

Refused, with a ValueError: UNets with a Fourier time embedding (the NCSN++ / score-SDE VE
models, which take σ rather than a timestep index and predict a scaled score) and schedulers
without a discrete β table (``ScoreSdeVeScheduler``, EDM and flow-matching schedulers).

Class-conditional UNets (``num_class_embeds`` or a ``class_embed_type``) take their label from
a leaf condition: ``model.given({"class": 7})`` calls the UNet with ``class_labels = 7``.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple, Union

import torch

try:
    from diffusers import UNet2DModel
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("compose.adapters.diffusers needs the optional dependency diffusers: "
                      "pip install 'score-compose[diffusers]'") from error

from ..components import Conditions, ScoreModel
from ..components.network import check_condition_tensors
from ..schedule import Schedule

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_LEARNED_VARIANCE = ("learned", "learned_range")


def noise_from_output(output: torch.Tensor, x: torch.Tensor, root_alpha_bar: torch.Tensor,
                      sigma: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """ε̂ from a network output at x_t; √ᾱ_t and σ_t broadcast against x.

    epsilon: ε̂ = output;  v_prediction: ε̂ = √ᾱ_t v + σ_t x_t;
    sample:  ε̂ = (x_t − √ᾱ_t x̂_0) / σ_t.
    """
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return root_alpha_bar * output + sigma * x
    if prediction_type == "sample":
        return (x - root_alpha_bar * output) / sigma
    raise ValueError(_prediction_type_message(prediction_type))


def _prediction_type_message(prediction_type) -> str:
    return (f"prediction_type: must be one of {', '.join(PREDICTION_TYPES)}, "
            f"got {prediction_type!r}")


class DiffusersScoreModel(ScoreModel):
    """A diffusers ``UNet2DModel`` with its scheduler's β's: score −ε̂(x, t)/σ_t.

    Args:
        unet: a ``diffusers.UNet2DModel`` with a positional or learned timestep embedding.
        scheduler: a DDPM-style scheduler (``DDPMScheduler``, ``DDIMScheduler``, ...) holding
            the discrete β's the UNet was trained with.
        name: identifier in plans and expression strings.
        event_shape: shape of one sample; by default (in_channels, *sample_size) from the
            UNet's config when it records a sample size.
        prediction_type: "epsilon", "v_prediction" or "sample"; by default the scheduler's.
        condition: the condition variable passed to a class-conditional UNet as
            ``class_labels`` (default "class").

    The UNet is called with timestep t − 1 (see the module docstring) and in its own dtype;
    ε̂ is formed in the input's dtype with √ᾱ_t and σ_t from tables cached per device and
    dtype. Without ``x.requires_grad`` the UNet runs under ``torch.no_grad()``, so sampling
    never keeps the network's autograd graph.
    """

    def __init__(self, unet: "UNet2DModel", scheduler, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None,
                 prediction_type: Optional[str] = None, condition: str = "class"):
        if not isinstance(unet, UNet2DModel):
            raise ValueError(f"unet: expected a diffusers UNet2DModel, got {type(unet).__name__}")
        config = unet.config
        if config.time_embedding_type == "fourier":
            raise ValueError(
                "unet: a UNet2DModel with time_embedding_type='fourier' is a variance-exploding "
                "score-SDE model (it takes σ, not a timestep index); only discrete "
                "variance-preserving ε/v/x0 models (positional or learned time embedding) "
                "are supported")
        betas = _scheduler_betas(scheduler)
        try:
            schedule = Schedule(betas, name="custom")
        except ValueError as error:
            raise ValueError(f"scheduler: its β's do not form a discrete variance-preserving "
                             f"schedule ({error}); with rescale_betas_zero_snr=True the last β "
                             "is 1, which has no finite score at t = T") from error
        trained_T = getattr(config, "num_train_timesteps", None)
        if trained_T is not None and int(trained_T) != schedule.T:
            raise ValueError(f"unet: trained with num_train_timesteps={trained_T}, but the "
                             f"scheduler has {schedule.T}")

        if prediction_type is None:
            prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(_prediction_type_message(prediction_type))

        in_channels, out_channels = int(config.in_channels), int(config.out_channels)
        if out_channels == 2 * in_channels:
            learned_variance = True
        elif out_channels == in_channels:
            learned_variance = False
        else:
            raise ValueError(f"unet: out_channels={out_channels} must equal in_channels="
                             f"{in_channels} (a prediction) or twice it (prediction and "
                             "learned variance)")

        if event_shape is None and config.sample_size is not None:
            size = config.sample_size
            size = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
            event_shape = (in_channels,) + tuple(int(s) for s in size)
        super().__init__(unet, schedule, name, event_shape)
        self.prediction_type = prediction_type
        self.learned_variance = learned_variance
        self.channels = in_channels
        self.condition = condition
        self.class_conditional = getattr(unet, "class_embedding", None) is not None
        self._tables = {}

    # -- tables ------------------------------------------------------------------------
    def tables(self, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(√ᾱ, σ) over levels 1..T (index t − 1) on the device and in the dtype of `like`.

        Computed in float64 and cast once per (device, dtype), so a sampling loop never
        copies them again.
        """
        key = (like.device, like.dtype)
        if key not in self._tables:
            self._tables[key] = (self.schedule.alpha_bars.sqrt().to(device=like.device, dtype=like.dtype),
                                 self.schedule.sigmas.to(device=like.device, dtype=like.dtype))
        return self._tables[key]

    def noise_from_output(self, output: torch.Tensor, x: torch.Tensor,
                          t: Union[int, torch.Tensor]) -> torch.Tensor:
        """ε̂ at level t (an int or an int64 tensor of shape (N,)) from the UNet's prediction."""
        root_alpha_bar, sigma = self.tables(x)
        index = _timestep_index(x, t)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return noise_from_output(output, x, root_alpha_bar[index].reshape(shape),
                                 sigma[index].reshape(shape), self.prediction_type)

    # -- the network -------------------------------------------------------------------
    def unet_output(self, x: torch.Tensor, t: Union[int, torch.Tensor],
                    conditions: Conditions = ()) -> torch.Tensor:
        """The UNet's prediction (ε, v or x̂_0; the variance half dropped) at level t,
        called with diffusers' timestep t − 1; returned in the dtype of x."""
        kwargs = self._class_labels(conditions, x.shape[0], x.device)
        timesteps = _timestep_index(x, t)
        dtype = getattr(self.net, "dtype", x.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            out = self.net(x.to(dtype), timesteps, return_dict=False, **kwargs)[0]
        if self.learned_variance:
            out = out[:, :self.channels]
        if out.shape != x.shape:
            raise ValueError(f"{self.name}: the UNet returned shape {tuple(out.shape)} for input "
                             f"{tuple(x.shape)}")
        return out.to(x.dtype)

    def noise_prediction(self, x: torch.Tensor, t: Union[int, torch.Tensor],
                         conditions: Conditions = ()) -> torch.Tensor:
        """ε̂(x, t), shape of x (see the module docstring for each prediction type)."""
        return self.noise_from_output(self.unet_output(x, t, conditions), x, t)

    def check_conditions(self, conditions: Conditions) -> None:
        check_condition_tensors(self.name, conditions)
        self._class_labels(conditions, 1, "cpu")

    def _class_labels(self, conditions: Conditions, n: int, device) -> dict:
        values = dict(conditions)
        unknown = sorted(set(values) - {self.condition})
        if unknown:
            raise ValueError(f"{self.name}: unknown condition(s) {', '.join(unknown)}; a diffusers "
                             f"UNet2DModel takes only '{self.condition}' (its class_labels)")
        if not self.class_conditional:
            if values:
                raise ValueError(f"{self.name}: the UNet is not class-conditional (no "
                                 f"num_class_embeds), so it takes no '{self.condition}' condition")
            return {}
        if self.condition not in values:
            raise ValueError(f"{self.name}: the UNet is class-conditional; give the class as a "
                             f"condition, e.g. {self.name}.given({{'{self.condition}': 0}})")
        value = values[self.condition]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{self.condition}: expected a class number, got {value!r}")
        if isinstance(value, numbers.Integral):
            labels = torch.full((n,), int(value), dtype=torch.long, device=device)
            num_classes = getattr(self.net.config, "num_class_embeds", None)
            if num_classes is not None and not 0 <= int(value) < num_classes:
                raise ValueError(f"{self.condition}: class must be in 0..{num_classes - 1}, got {value}")
        else:
            labels = torch.full((n,), float(value), device=device)
        return {"class_labels": labels}

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, schedule={self.schedule!r}, "
                f"prediction_type={self.prediction_type!r}, learned_variance={self.learned_variance}")


def from_diffusers(unet: "UNet2DModel", scheduler, name: Optional[str] = None,
                   event_shape: Optional[Sequence[int]] = None,
                   prediction_type: Optional[str] = None,
                   condition: str = "class") -> DiffusersScoreModel:
    """A `DiffusersScoreModel` from a UNet2DModel and its DDPM-style scheduler.

    Compose it with components on the same schedule: ``adapter.schedule``.
    """
    return DiffusersScoreModel(unet, scheduler, name=name, event_shape=event_shape,
                               prediction_type=prediction_type, condition=condition)


def _scheduler_betas(scheduler) -> torch.Tensor:
    """The scheduler's β_1..β_T in float64, or a ValueError for non-VP schedulers."""
    kind = type(scheduler).__name__
    betas = getattr(scheduler, "betas", None)
    alpha_bars = getattr(scheduler, "alphas_cumprod", None)
    config = getattr(scheduler, "config", None)
    T = getattr(config, "num_train_timesteps", None)
    if not isinstance(betas, torch.Tensor) or not isinstance(alpha_bars, torch.Tensor) or T is None:
        raise ValueError(
            f"scheduler: a {kind} has no discrete β schedule (betas, alphas_cumprod, "
            "num_train_timesteps); only DDPM-style variance-preserving schedulers (DDPMScheduler, "
            "DDIMScheduler, ...) for discrete ε/v/x0 models are supported, not variance-exploding "
            "(ScoreSdeVeScheduler), EDM or flow-matching ones")
    betas = betas.detach().to(device="cpu", dtype=torch.float64).flatten()
    if betas.numel() != int(T):
        raise ValueError(f"scheduler: {betas.numel()} β's for num_train_timesteps={T}")
    expected = torch.cumprod(1.0 - betas, 0)
    if not torch.allclose(alpha_bars.detach().cpu().double(), expected, rtol=1e-4, atol=1e-7):
        raise ValueError(f"scheduler: a {kind} whose alphas_cumprod is not cumprod(1 − betas) "
                         "is not a discrete variance-preserving schedule")
    return betas


def _timestep_index(x: torch.Tensor, t: Union[int, torch.Tensor]) -> torch.Tensor:
    """diffusers' 0-based timestep t − 1 as an int64 tensor of shape (N,) on x's device."""
    if isinstance(t, torch.Tensor):
        return (t.to(device=x.device, dtype=torch.long) - 1).expand(x.shape[0])
    return torch.full((x.shape[0],), int(t) - 1, dtype=torch.long, device=x.device)
