"""A diffusers UNet and its DDPM-style scheduler as a `compose.ScoreModel`.

Takes a ``UNet2DModel`` (unconditional or class-conditional) or a ``UNet2DConditionModel``
(text-conditional: Stable Diffusion, DeepFloyd IF, ...). Only discrete variance-preserving
models are supported: the scheduler's β_1..β_T become our `Schedule`, and the network's output
is turned into a noise prediction ε̂, so the score is the usual s_t(x) = −ε̂(x, t) / σ_t.

Timesteps. diffusers indexes training timesteps from 0: its timestep k noises with
ᾱ_k = cumprod(1 − β)[k] (0-based), which is our level k + 1. So our level t = 1..T calls the
UNet with timestep t − 1, and our ᾱ_t is ``scheduler.alphas_cumprod[t − 1]``, the table the
UNet was trained with, read in float64 (β_t = 1 − ᾱ_t/ᾱ_{t−1}, as diffusers' DDPM step derives
it; `scheduler_betas`). On a respaced
schedule (``compile(..., levels=...)``) the adapter is called with the training level τ_i of
each new level, so the UNet receives τ_i − 1 (docs/pretrained.md).

Prediction types, with x_t = √ᾱ_t x_0 + σ_t ε and σ_t² = 1 − ᾱ_t:

    "epsilon"        output ε̂                    ε̂ = output
    "v_prediction"   v = √ᾱ_t ε − σ_t x_0         ε̂ = √ᾱ_t v + σ_t x_t
    "sample"         x̂_0                          ε̂ = (x_t − √ᾱ_t x̂_0) / σ_t

(The v line: substituting x_0 = (x_t − σ_t ε)/√ᾱ_t into v gives v = (ε − σ_t x_t)/√ᾱ_t,
using ᾱ_t + σ_t² = 1.)

Learned variance (Nichol & Dhariwal 2021; DeepFloyd IF): a UNet with twice the input channels
predicts the variance in its second half; only the first half (the ε/v/x_0 prediction) is used.

Conditions. A leaf's conditions become the UNet's inputs:

    p(class=7)            class_labels = 7        (num_class_embeds or a class_embed_type)
    p(prompt="a castle")  encoder_hidden_states = encode_prompt("a castle")  (and its
                          attention mask as encoder_attention_mask, when the encoder gives one)

The bare leaf ``p`` of a text-conditional UNet is the empty prompt's embedding (the
unconditional model of classifier-free guidance); that of a class-conditional UNet is
``null_class`` when one is given. Embeddings are cached per prompt, device and dtype. Leaves
that differ only in their conditions are evaluated at the same points in one UNet call with the
conditions stacked along the batch (`scores`), as classifier-free guidance implementations do.

Half precision: the UNet runs in its own dtype (float16, bfloat16); its output is converted to
the input's dtype before ε̂ and the score are formed, so chains and Δ stay in the chains' dtype.

Refused, with a ValueError: UNets with a Fourier time embedding (the NCSN++ / score-SDE VE
models, which take σ rather than a timestep index and predict a scaled score), UNets that need
inputs other than text and class (SDXL's ``text_time``, image embeddings, class embedding
vectors), schedulers without a discrete β table (``ScoreSdeVeScheduler``, EDM and
flow-matching schedulers) and β's outside (0, 1), each with its cause. The UNet is called
through `call_net`, so an error raised inside it carries the note naming the component.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

try:
    from diffusers import UNet2DConditionModel, UNet2DModel
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("compose.adapters.diffusers needs the optional dependency diffusers: "
                      "pip install 'score-compose[diffusers]'") from error

from ..components import Conditions, ScoreModel
from ..components.network import check_condition_tensors, checked_output
from ..components.predictions import noise_from_prediction
from ..schedule import Schedule

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
PROMPT = "prompt"

# What a UNet2DConditionModel may need besides the text embedding and the class label.
_ADDITION_EMBEDS = (None, "text")                   # "text": IF pools the embedding itself
_ENCODER_PROJECTIONS = (None, "text_proj")          # "text_proj": IF projects T5 features

Embedding = Tuple[torch.Tensor, Optional[torch.Tensor]]


def noise_from_output(output: torch.Tensor, x: torch.Tensor, root_alpha_bar: torch.Tensor,
                      sigma: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """ε̂ from a network output at x_t; √ᾱ_t and σ_t broadcast against x.

    epsilon: ε̂ = output;  v_prediction: ε̂ = √ᾱ_t v + σ_t x_t;
    sample:  ε̂ = (x_t − √ᾱ_t x̂_0) / σ_t   (the library's one conversion, `noise_from_prediction`).
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(_prediction_type_message(prediction_type))
    return noise_from_prediction(output, x, root_alpha_bar, sigma, prediction_type)


def _prediction_type_message(prediction_type) -> str:
    return (f"prediction_type: must be one of {', '.join(PREDICTION_TYPES)}, "
            f"got {prediction_type!r}")


class PromptEmbeddings:
    """``encode_prompt`` with a cache: prompt → (embedding (1, L, D), mask (1, L) or None).

    The encoder is called once per prompt; its result is converted once per device and dtype.
    `encode_prompt(prompt)` returns an embedding of shape (1, L, D) or (L, D), or a pair
    (embedding, attention mask of shape (1, L) or (L,), 1 = keep, or None).
    """

    def __init__(self, encode_prompt: Callable[[str], object]):
        if not callable(encode_prompt):
            raise ValueError(f"encode_prompt: expected a callable prompt → embedding, got "
                             f"{type(encode_prompt).__name__}")
        self.encode_prompt = encode_prompt
        self._encoded: Dict[str, Embedding] = {}
        self._converted: Dict[tuple, Embedding] = {}

    def __call__(self, prompt: str, device, dtype) -> Embedding:
        key = (prompt, torch.device(device), dtype)
        if key not in self._converted:
            if prompt not in self._encoded:
                with torch.no_grad():
                    self._encoded[prompt] = _check_embedding(self.encode_prompt(prompt), prompt)
            embedding, mask = self._encoded[prompt]
            self._converted[key] = (embedding.to(device=device, dtype=dtype),
                                    None if mask is None else mask.to(device=device))
        return self._converted[key]

    def __len__(self) -> int:
        return len(self._encoded)


def _check_embedding(result, prompt: str) -> Embedding:
    mask = None
    if isinstance(result, (tuple, list)):
        if len(result) != 2:
            raise ValueError(f"encode_prompt({prompt!r}): expected an embedding or a pair "
                             f"(embedding, attention mask), got {len(result)} values")
        result, mask = result
    if not isinstance(result, torch.Tensor) or not torch.is_floating_point(result):
        raise ValueError(f"encode_prompt({prompt!r}): expected a floating-point tensor, got "
                         f"{type(result).__name__}")
    embedding = result.detach()
    if embedding.dim() == 2:
        embedding = embedding.unsqueeze(0)
    if embedding.dim() != 3 or embedding.shape[0] != 1:
        raise ValueError(f"encode_prompt({prompt!r}): expected an embedding of shape (1, L, D) "
                         f"or (L, D) for one prompt, got {tuple(result.shape)}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"encode_prompt({prompt!r}): the attention mask must be a tensor")
        mask = mask.detach().reshape(1, -1).to(torch.float32)     # bool or int masks as 1/0
        if mask.shape[1] != embedding.shape[1]:
            raise ValueError(f"encode_prompt({prompt!r}): attention mask of {mask.shape[1]} tokens "
                             f"for an embedding of {embedding.shape[1]}")
    return embedding, mask


class DiffusersScoreModel(ScoreModel):
    """A diffusers UNet with its scheduler's β's: score −ε̂(x, t)/σ_t.

    Args:
        unet: a ``diffusers.UNet2DModel`` or ``UNet2DConditionModel`` with a positional or
            learned timestep embedding.
        scheduler: a DDPM-style scheduler (``DDPMScheduler``, ``DDIMScheduler``,
            ``PNDMScheduler``, ...) holding the discrete β's the UNet was trained with.
        name: identifier in plans and expression strings.
        event_shape: shape of one sample; by default (in_channels, *sample_size) from the
            UNet's config when it records a sample size.
        prediction_type: "epsilon", "v_prediction" or "sample"; by default the scheduler's.
        condition: the condition variable passed to a class-conditional UNet as
            ``class_labels`` (default "class").
        encode_prompt: prompt → embedding (or (embedding, attention mask)) for a
            ``UNet2DConditionModel``; the condition ``prompt="..."`` selects the prompt.
        null_class: the class label of the bare leaf of a class-conditional UNet (the
            unconditional model of classifier-free guidance); without it the bare leaf is
            refused.
        decode: samples → images on the [0, 1] scale, or a diffusers VAE (``AutoencoderKL``:
            its decoder, for a latent model; `from_pipeline` passes the pipeline's own); by
            default pixels in [−1, 1] are mapped to [0, 1]. `compose.images.decode` clips.

    The UNet is called with timestep t − 1 (see the module docstring) and in its own dtype;
    ε̂ is formed in the input's dtype with √ᾱ_t and σ_t from tables cached per device and
    dtype. Without ``x.requires_grad`` the UNet runs under ``torch.no_grad()``, so sampling
    never keeps the network's autograd graph.
    """

    stacks_conditions = True          # conditions along the batch: one UNet call (stacked_score)

    def __init__(self, unet, scheduler, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None,
                 prediction_type: Optional[str] = None, condition: str = "class",
                 encode_prompt: Optional[Callable[[str], object]] = None,
                 null_class: Optional[int] = None,
                 decode=None):
        if not isinstance(unet, (UNet2DModel, UNet2DConditionModel)):
            raise ValueError(f"unet: expected a diffusers UNet2DModel or UNet2DConditionModel, "
                             f"got {type(unet).__name__}")
        config = unet.config
        if config.time_embedding_type == "fourier":
            raise ValueError(
                f"unet: a {type(unet).__name__} with time_embedding_type='fourier' is a "
                "variance-exploding score-SDE model (it takes σ, not a timestep index); only "
                "discrete variance-preserving ε/v/x0 models (positional or learned time "
                "embedding) are supported")
        text_conditional = isinstance(unet, UNet2DConditionModel)
        if text_conditional:
            _check_condition_inputs(config)
            if encode_prompt is None:
                raise ValueError("encode_prompt: a UNet2DConditionModel needs its prompt encoder, "
                                 "a callable prompt → embedding of shape (1, L, D) (from_pipeline "
                                 "takes the pipeline's own)")
        elif encode_prompt is not None:
            raise ValueError("encode_prompt: a UNet2DModel takes no text; prompts need a "
                             "UNet2DConditionModel")
        schedule = Schedule(scheduler_betas(scheduler), name=_schedule_name(scheduler))
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
            event_shape = (in_channels,) + _sample_size(config.sample_size)
        if event_shape is not None:
            _check_image_shape(unet, event_shape, in_channels)
        if condition == PROMPT:
            raise ValueError(f"condition: '{PROMPT}' is the text condition; name the class "
                             "condition otherwise")
        super().__init__(unet, schedule, name, event_shape, prediction=prediction_type,
                         learned_variance=learned_variance, level_offset=-1)
        self.prediction_type = prediction_type
        self.learned_variance = learned_variance
        self.channels = in_channels
        self.condition = condition
        self.class_conditional = getattr(unet, "class_embedding", None) is not None
        if self.class_conditional:
            _check_class_embedding(unet)
        self.text_conditional = text_conditional
        self.prompts = PromptEmbeddings(encode_prompt) if text_conditional else None
        if null_class is not None:
            if not self.class_conditional:
                raise ValueError("null_class: the UNet is not class-conditional")
            self._class_value(null_class, 1, "null_class")
        self.null_class = null_class
        if _is_vae(decode):
            decode = VaeDecoder(decode)
        if decode is not None and not callable(decode):
            raise ValueError(f"decode: expected a callable samples → images or a diffusers VAE, "
                             f"got {type(decode).__name__}")
        self.decoder = decode
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
    def unet_outputs(self, x: torch.Tensor, t: Union[int, torch.Tensor],
                     conditions_list: Sequence[Conditions]) -> torch.Tensor:
        """The UNet's prediction (ε, v or x̂_0; the variance half dropped) at level t from ONE
        call on x of k · N rows, block j under ``conditions_list[j]`` (conditions stacked along
        the batch), at diffusers' timestep t − 1; in the dtype of x."""
        k = len(conditions_list)
        if x.shape[0] % k:
            raise ValueError(f"x: {x.shape[0]} rows do not split into {k} blocks of conditions")
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            out = self.call_net(x, t, conditions_list)[0]
        out = checked_output(self.name, out, x, "the UNet")
        if self.learned_variance:
            out = out[:, :self.channels]
        if out.shape != x.shape:
            raise ValueError(f"{self.name}: the UNet returned shape {tuple(out.shape)} for input "
                             f"{tuple(x.shape)}")
        return out

    # `call_net`'s hooks: the UNet is called as unet(x, t − 1, return_dict=False, **inputs).
    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """x in the UNet's own dtype."""
        return x.to(getattr(self.net, "dtype", x.dtype))

    def network_levels(self, x: torch.Tensor, t: Union[int, torch.Tensor]) -> torch.Tensor:
        """diffusers' 0-based timesteps t − 1, int64 of shape (N,)."""
        return _timestep_index(x, t)

    def network_keywords(self, x: torch.Tensor, conditions_list: Sequence[Conditions]) -> dict:
        """The UNet's keyword inputs for the k blocks of rows of x (see `_unet_inputs`)."""
        keywords = self._unet_inputs(conditions_list, x.shape[0] // len(conditions_list), x.device)
        keywords["return_dict"] = False
        return keywords

    def unet_output(self, x: torch.Tensor, t: Union[int, torch.Tensor],
                    conditions: Conditions = ()) -> torch.Tensor:
        """The UNet's prediction at level t for one set of conditions (see `unet_outputs`)."""
        return self.unet_outputs(x, t, [conditions])

    def noise_prediction(self, x: torch.Tensor, t: Union[int, torch.Tensor],
                         conditions: Conditions = ()) -> torch.Tensor:
        """ε̂(x, t), shape of x (see the module docstring for each prediction type)."""
        return self.noise_from_output(self.unet_output(x, t, conditions), x, t)

    def check_conditions(self, conditions: Conditions) -> None:
        """Refuse at compile time what the UNet cannot take: unknown variables, a prompt that
        is not a string, a class out of range, a missing class without `null_class`."""
        check_condition_tensors(self.name, conditions)
        _, label = self._parse(conditions)
        if label is not None:
            self._class_value(label, 1, self.condition)

    def stacked_score(self, x: torch.Tensor, t: int,
                      conditions_list: Sequence[Conditions]) -> torch.Tensor:
        """s_t(x | c_j) = −ε̂(x, t | c_j)/σ_t on each block j of the k · N rows of x, from one
        UNet call."""
        t = self._level(t)
        self._check_input(x)
        output = self.unet_outputs(x, t, conditions_list)
        return self.noise_from_output(output, x, t) * (-1.0 / self.schedule.sigma(t))

    def scores(self, x: torch.Tensor, t: int,
               conditions_list: Sequence[Conditions]) -> List[torch.Tensor]:
        """[s_t(x | c) for c in conditions_list] at the same x, from one UNet call on the k
        copies of x stacked."""
        k = len(conditions_list)
        stacked = x.repeat((k,) + (1,) * (x.dim() - 1)) if k > 1 else x
        return list(self.stacked_score(stacked, t, conditions_list).split(x.shape[0]))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Images on the [0, 1] scale from samples, not clipped (`compose.images.decode` clips
        and counts): the `decode` hook (a VAE for latent models), or (x + 1)/2 for a pixel
        model of 1 or 3 channels trained on [−1, 1]. Latents without a VAE are refused."""
        if self.decoder is not None:
            return self.decoder(x)
        if self.channels not in (1, 3):
            raise ValueError(
                f"{self.name}: samples of {self.channels} channels are latents, not pixels, and "
                "no VAE decodes them; pass the VAE: from_diffusers(unet, scheduler, "
                "decode=pipeline.vae), or load the whole pipeline (compose.adapters.load or "
                "from_pipeline)")
        return x / 2 + 0.5

    # -- conditions --------------------------------------------------------------------
    def _unet_inputs(self, conditions_list: Sequence[Conditions], n: int, device) -> dict:
        """Keyword inputs of the stacked call: class_labels (k · n,), encoder_hidden_states
        (k · n, L, D) and encoder_attention_mask (k · n, L) where needed."""
        parsed = [self._parse(conditions) for conditions in conditions_list]
        kwargs = {}
        if self.class_conditional:
            labels = [self._class_value(label, n, self.condition, device) for _, label in parsed]
            kwargs["class_labels"] = torch.cat(labels) if len(labels) > 1 else labels[0]
        if self.text_conditional:
            dtype = getattr(self.net, "dtype", torch.float32)
            embeddings = [self.prompts(prompt, device, dtype) for prompt, _ in parsed]
            states, mask = self._stack_embeddings(embeddings, n)
            kwargs["encoder_hidden_states"] = states
            if mask is not None:
                kwargs["encoder_attention_mask"] = mask
        return kwargs

    def _parse(self, conditions: Conditions) -> Tuple[Optional[str], object]:
        """(prompt, class label) of one leaf: the empty prompt and `null_class` by default."""
        values = dict(conditions)
        allowed = ([PROMPT] if self.text_conditional else []) + [self.condition]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            kind = type(self.net).__name__
            raise ValueError(f"{self.name}: unknown condition(s) {', '.join(unknown)}; a diffusers "
                             f"{kind} takes only {' and '.join(repr(a) for a in allowed)}"
                             + ("" if self.text_conditional or PROMPT not in unknown else
                                " (prompts need a UNet2DConditionModel with encode_prompt)"))
        prompt = None
        if self.text_conditional:
            prompt = values.get(PROMPT, "")
            if not isinstance(prompt, str):
                raise ValueError(f"{PROMPT}: expected a string, got {prompt!r}")
        label = None
        if not self.class_conditional:
            if self.condition in values:
                raise ValueError(f"{self.name}: the UNet is not class-conditional (no "
                                 f"num_class_embeds), so it takes no '{self.condition}' condition")
        elif self.condition in values:
            label = values[self.condition]
        elif self.null_class is not None:
            label = self.null_class
        else:
            raise ValueError(f"{self.name}: the UNet is class-conditional; give the class as a "
                             f"condition, e.g. {self.name}({self.condition}=0) in the composition, "
                             "or a class for the bare leaf (null_class= of load / from_diffusers, "
                             "--null-class on the command line)")
        return prompt, label

    def _class_value(self, value, n: int, what: str, device=None) -> torch.Tensor:
        """The class labels (n,) for a class number: an integer in 0..num_class_embeds − 1 for
        a UNet with a table of class embeddings, any finite number for
        class_embed_type='timestep' (embedded like a timestep)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{what}: expected a class number, got {value!r:.40}")
        table = self.net.class_embedding
        if isinstance(table, torch.nn.Embedding):
            num_classes = table.num_embeddings
            if not isinstance(value, numbers.Integral):
                raise ValueError(f"{what}: the UNet looks the class up in a table of "
                                 f"num_class_embeds={num_classes}, so the class is an integer in "
                                 f"0..{num_classes - 1}, got {value!r}")
            if not 0 <= int(value) < num_classes:
                raise ValueError(f"{what}: class must be in 0..{num_classes - 1} "
                                 f"(num_class_embeds={num_classes}), got {value}")
            return torch.full((n,), int(value), dtype=torch.long, device=device)
        if isinstance(value, numbers.Integral):
            return torch.full((n,), int(value), dtype=torch.long, device=device)
        if not math.isfinite(float(value)):
            raise ValueError(f"{what}: expected a finite class number, got {value!r}")
        return torch.full((n,), float(value), device=device)

    def _stack_embeddings(self, embeddings: List[Embedding], n: int):
        """Each (1, L_j, D) embedding repeated n times and stacked: (k · n, L, D), with the
        masks (k · n, L) when any is given. Shorter embeddings are padded with masked zeros."""
        length = max(e.shape[1] for e, _ in embeddings)
        ragged = any(e.shape[1] != length for e, _ in embeddings)
        if ragged and self.net.config.addition_embed_type is not None:
            raise ValueError(
                f"{self.name}: prompt embeddings of different lengths "
                f"({sorted({e.shape[1] for e, _ in embeddings})}) cannot share a call of a UNet with "
                f"addition_embed_type={self.net.config.addition_embed_type!r}, which pools every "
                "token; have encode_prompt pad to a fixed length")
        use_mask = ragged or any(m is not None for _, m in embeddings)
        states, masks = [], []
        for embedding, mask in embeddings:
            pad = length - embedding.shape[1]
            if mask is None:
                mask = torch.ones((1, embedding.shape[1]), device=embedding.device)
            if pad:
                embedding = torch.nn.functional.pad(embedding, (0, 0, 0, pad))
                mask = torch.nn.functional.pad(mask, (0, pad))
            states.append(embedding.expand(n, -1, -1))
            masks.append(mask.expand(n, -1))
        states = torch.cat(states) if len(states) > 1 else states[0]
        mask = (torch.cat(masks) if len(masks) > 1 else masks[0]) if use_mask else None
        return states, mask

    def extra_repr(self) -> str:
        kind = "text" if self.text_conditional else "class" if self.class_conditional else "unconditional"
        return (f"name={self.name!r}, schedule={self.schedule!r}, conditioning={kind}, "
                f"prediction_type={self.prediction_type!r}, learned_variance={self.learned_variance}")


class VaeDecoder:
    """Latents → images on the [0, 1] scale through a VAE, not clipped:
    x = VAE.decode(z / scaling_factor + shift_factor), image = (x + 1)/2."""

    def __init__(self, vae):
        self.vae = vae
        config = vae.config
        self.scale = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        self.shift = float(getattr(config, "shift_factor", None) or 0.0)

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = (latents / self.scale + self.shift).to(device=self.vae.device, dtype=self.vae.dtype)
            images = self.vae.decode(z, return_dict=False)[0]
        return images.to(latents.dtype) / 2 + 0.5

    def __repr__(self) -> str:
        return f"VaeDecoder({type(self.vae).__name__}, scaling_factor={self.scale:g})"


def _is_vae(value) -> bool:
    """A diffusers autoencoder (it decodes latents; its config names its latent channels)."""
    return (isinstance(value, torch.nn.Module) and callable(getattr(value, "decode", None))
            and hasattr(getattr(value, "config", None), "latent_channels"))


def from_diffusers(unet, scheduler, name: Optional[str] = None,
                   event_shape: Optional[Sequence[int]] = None,
                   prediction_type: Optional[str] = None, condition: str = "class", *,
                   encode_prompt: Optional[Callable[[str], object]] = None,
                   null_class: Optional[int] = None,
                   decode=None) -> DiffusersScoreModel:
    """A `DiffusersScoreModel` from a UNet2DModel or UNet2DConditionModel and its DDPM-style
    scheduler (see `DiffusersScoreModel` for the arguments).

    Compose it with components on the same schedule (``adapter.schedule``), and sample on
    fewer levels with ``compose.compile(..., levels=50)``.
    """
    return DiffusersScoreModel(unet, scheduler, name=name, event_shape=event_shape,
                               prediction_type=prediction_type, condition=condition,
                               encode_prompt=encode_prompt, null_class=null_class, decode=decode)


def _check_condition_inputs(config) -> None:
    """Refuse UNet2DConditionModels that need inputs besides text and class labels."""
    addition = getattr(config, "addition_embed_type", None)
    if addition not in _ADDITION_EMBEDS:
        raise ValueError(f"unet: addition_embed_type={addition!r} needs added_cond_kwargs (SDXL's "
                         "pooled text and time ids, or image embeddings); only text- and "
                         "class-conditional UNets are supported")
    projection = getattr(config, "encoder_hid_dim_type", None)
    if projection not in _ENCODER_PROJECTIONS:
        raise ValueError(f"unet: encoder_hid_dim_type={projection!r} needs image embeddings; "
                         "only text- and class-conditional UNets are supported")


def _check_class_embedding(unet) -> None:
    """Refuse class embeddings that take vectors (identity, projection): a leaf's class
    condition is one number, looked up in a table (num_class_embeds) or embedded like a
    timestep (class_embed_type='timestep')."""
    if isinstance(unet.class_embedding, torch.nn.Embedding):
        return
    kind = getattr(unet.config, "class_embed_type", None)
    if kind != "timestep":
        raise ValueError(f"unet: class_embed_type={kind!r} takes class embedding vectors, not a "
                         "class number; only UNets with num_class_embeds (a table of classes) "
                         "or class_embed_type='timestep' are supported")


def _sample_size(size) -> Tuple[int, int]:
    """The UNet config's sample_size (an int or a pair of ints) as (H, W)."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 1:
        return (int(size), int(size))
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"unet: its config's sample_size is {size!r}, not an image size (an integer "
                     "or a pair of integers ≥ 1); pass event_shape=(C, H, W)")


def _check_image_shape(unet, event_shape, in_channels: int) -> None:
    """event_shape is (C, H, W) with the UNet's C, and for a UNet2DModel (which, unlike a
    UNet2DConditionModel, does not pad) H and W are multiples of its downsampling factor."""
    shape = tuple(event_shape) if isinstance(event_shape, (list, tuple, torch.Size)) else None
    if shape is None or len(shape) != 3 or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"event_shape: a UNet's samples are images (C, H, W), got {event_shape!r}")
    if shape[0] != in_channels:
        raise ValueError(f"event_shape: {shape} has {shape[0]} channel(s), but the UNet takes "
                         f"in_channels={in_channels}")
    if isinstance(unet, UNet2DModel):
        factor = 2 ** (len(unet.config.down_block_types) - 1)
        if shape[1] % factor or shape[2] % factor:
            raise ValueError(f"event_shape: {shape}: this UNet2DModel halves the image "
                             f"{_times(len(unet.config.down_block_types) - 1)}, so H and W must "
                             f"be multiples of {factor}")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def scheduler_betas(scheduler) -> torch.Tensor:
    """β_1..β_T in float64 such that ᾱ_t = ∏_{s≤t}(1 − β_s) is the scheduler's own table
    ``alphas_cumprod[t − 1]``: β_t = 1 − ᾱ_t/ᾱ_{t−1} (ᾱ_0 = 1), as diffusers' DDPM step derives
    its β from the table. A ValueError naming the cause for schedulers that are not discrete
    variance-preserving ones, or whose β's leave (0, 1)."""
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
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"scheduler: num_train_timesteps={T!r}; a {kind} needs at least one "
                         "training timestep (an integer ≥ 1)")
    betas = betas.detach().to(device="cpu", dtype=torch.float64).flatten()
    if betas.numel() != int(T):
        raise ValueError(f"scheduler: {betas.numel()} β's for num_train_timesteps={T}")
    _check_betas(betas, config)
    expected = torch.cumprod(1.0 - betas, 0)
    table = alpha_bars.detach().to(device="cpu", dtype=torch.float64).flatten()
    if table.shape != expected.shape or not torch.allclose(table, expected, rtol=1e-4, atol=1e-7):
        raise ValueError(f"scheduler: a {kind} whose alphas_cumprod is not cumprod(1 − betas) "
                         "is not a discrete variance-preserving schedule")
    previous = torch.cat([torch.ones(1, dtype=torch.float64), table[:-1]])
    from_table = 1.0 - table / previous
    # A float32 table can repeat a value where β_t is below its resolution (≈ 6e-8): then the
    # β's themselves, whose product differs from the table by float32 rounding only.
    return from_table if bool(torch.all((from_table > 0) & (from_table < 1))) else betas


def _check_betas(betas: torch.Tensor, config) -> None:
    """Every β_t in (0, 1), or a ValueError naming the first that is not and the settings
    that made it."""
    bad = ~((betas > 0) & (betas < 1))
    if not bool(bad.any()):
        return
    t = int(bad.nonzero()[0]) + 1
    value = float(betas[t - 1])
    where = f"β_{t} = {value:.6g} (diffusers timestep {t - 1}) is not in (0, 1)"
    if value >= 1 and t == betas.numel() and getattr(config, "rescale_betas_zero_snr", False) \
            and not bool(bad[:-1].any()):
        raise ValueError(f"scheduler: {where}: rescale_betas_zero_snr=True makes the last β 1 "
                         "(zero terminal SNR), which has no finite score at t = T; load the "
                         "scheduler with rescale_betas_zero_snr=False")
    settings = ", ".join(f"{key}={getattr(config, key)!r}" for key in
                         ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")
                         if getattr(config, key, None) is not None)
    raise ValueError(f"scheduler: {where}, so its β's are not a variance-preserving schedule"
                     + (f" (from {settings})" if settings else "")
                     + "; every β_t must lie strictly between 0 and 1")


def _schedule_name(scheduler) -> str:
    """What plans call a diffusers schedule: its beta_schedule ("diffusers scaled_linear"), or
    "diffusers trained_betas" when the config lists the β's themselves."""
    config = getattr(scheduler, "config", None)
    if getattr(config, "trained_betas", None) is not None:
        return "diffusers trained_betas"
    return f"diffusers {getattr(config, 'beta_schedule', None) or 'schedule'}"


def _timestep_index(x: torch.Tensor, t: Union[int, torch.Tensor]) -> torch.Tensor:
    """diffusers' 0-based timestep t − 1 as an int64 tensor of shape (N,) on x's device."""
    if isinstance(t, torch.Tensor):
        return (t.to(device=x.device, dtype=torch.long) - 1).expand(x.shape[0])
    return torch.full((x.shape[0],), int(t) - 1, dtype=torch.long, device=x.device)
