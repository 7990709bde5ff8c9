"""`load`: a component from what a diffusers user has on disk, read from local files only.

``load(path_or_id)`` takes

- a folder written by ``save_pretrained``: a whole pipeline (``model_index.json``) or a folder
  with ``unet/`` and ``scheduler/`` subfolders;
- a Hugging Face hub id (``"google/ddpm-cifar10-32"``) of a model already in the local hub
  cache, resolved as huggingface_hub resolves it offline: ``models--google--ddpm-cifar10-32/
  refs/<revision>`` names a commit, ``snapshots/<commit>/`` holds the files. The cache is
  huggingface_hub's (``HF_HUB_CACHE``, or ``HF_HOME/hub``, by default
  ``~/.cache/huggingface/hub``). Nothing is downloaded.

Loading is strict where diffusers only logs: a weight that the config's network needs but the
file lacks, or one in the file that the network does not use (a config that names another
model than the weights were saved from), is an error naming them, as are damaged files (a
config that is not a JSON object, a class that is not what the file must hold, weights of
other shapes). Each is one ValueError naming the file and the damage.

Quiet: the progress bars of diffusers and transformers follow our rule (compose.progress: on
a terminal only, unless ``progress=`` says otherwise); notices that do not concern the user
(the accelerate hint, transformers' torchvision fallbacks) are not printed. Other warnings of
those libraries pass through.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Optional

import torch

import diffusers

from ..devices import available_device
from ..progress import wants_progress
from .diffusers import DiffusersScoreModel, from_diffusers, scheduler_betas
from .pipelines import COMPONENT_OPTIONS, from_pipeline

LOAD_OPTIONS = ("name", "dtype", "device", "revision", "progress") + COMPONENT_OPTIONS
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
MODEL_INDEX = "model_index.json"
#: Loggers whose warnings never concern a compose user: transformers' notes that an image
#: processor falls back to its PIL version without torchvision.
_SILENCED_LOGGERS = ("transformers.utils.import_utils",)


def load(path, name: Optional[str] = None, *, dtype: Optional[torch.dtype] = None,
         device=None, revision: Optional[str] = None, progress: Optional[bool] = None,
         **options) -> DiffusersScoreModel:
    """A component from a ``save_pretrained`` folder or a hub id in the local cache.

    Args:
        path: a pipeline folder (``model_index.json``), a folder with ``unet/`` and
            ``scheduler/`` subfolders (then give ``encode_prompt=`` for a text UNet), or a hub
            id such as ``"google/ddpm-cifar10-32"`` already in the Hugging Face cache.
        name: identifier in plans and expression strings.
        dtype: load the networks in this dtype (e.g. torch.float16 or torch.bfloat16); the
            chains stay in their own dtype (float32 by default).
        device: move the networks there (checked first, as `compose.sample` checks it).
        revision: for a hub id, the branch, tag or commit in the cache (default "main").
        progress: loading bars: True, False, or None (the default) for a terminal only.
        options: further `from_pipeline` / `from_diffusers` arguments: event_shape,
            prediction_type, condition, null_class, encode_prompt, decode.
    """
    unknown = sorted(set(options) - set(COMPONENT_OPTIONS))
    if unknown:
        raise ValueError(f"load: unknown option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; the options are {', '.join(LOAD_OPTIONS)}")
    dtype_argument = _dtype_argument(dtype)
    if device is not None:
        device = available_device(device)
    bars = wants_progress(progress)
    folder = resolve(path, revision)
    if os.path.isfile(os.path.join(folder, MODEL_INDEX)):
        raw = read_config(os.path.join(folder, MODEL_INDEX))
        text_parts = any(isinstance(v, (list, tuple)) and v[:1] == ["transformers"] for v in raw.values())
        with quiet_loading(bars, text_parts):
            pipeline = _load_pipeline(folder, _pipeline_index(folder), dtype)
            if device is not None:
                pipeline = pipeline.to(device)
        return from_pipeline(pipeline, name, **options)
    subfolder = _model_layout(folder)
    unet_config = os.path.join(_where(folder, subfolder), "config.json")
    unet_class = _config_class(unet_config, UNET_CLASSES, "a diffusers UNet2DModel or "
                               "UNet2DConditionModel")
    with quiet_loading(bars):
        unet = _load_model(folder, subfolder, unet_class, dtype_argument)
        scheduler = _load_scheduler(folder, subfolder and "scheduler")
    if device is not None:
        unet = unet.to(device)
    return from_diffusers(unet, scheduler, name=name, **options)


# -- where the files are ---------------------------------------------------------------------
def resolve(path, revision: Optional[str] = None) -> str:
    """The local folder of `path`: itself if it is a folder, else the cached snapshot of the
    hub id `path` at `revision`; a ValueError that says where it looked otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: expected a folder or a Hugging Face hub id, got "
                         f"{type(path).__name__}")
    text = os.fspath(path)
    if revision is not None and not (isinstance(revision, str) and revision):
        raise ValueError(f"revision: expected a branch, tag or commit name, got {revision!r}")
    if os.path.isdir(text):
        if revision is not None:
            raise ValueError(f"revision: {text!r} is a folder; a revision applies to hub ids only")
        return text
    if isinstance(path, str) and _is_repo_id(text):
        return cached_snapshot(text, revision)
    raise ValueError(f"path: {text!r} is not a folder written by save_pretrained (nor a hub id "
                     "such as 'google/ddpm-cifar10-32')")


def _model_layout(folder: str) -> Optional[str]:
    """"unet" for a folder with unet/ and scheduler/ subfolders, None for a UNet's
    config.json and scheduler_config.json side by side; a ValueError for anything else."""
    for subfolder, files in (("unet", ("unet/config.json", "scheduler/scheduler_config.json")),
                             (None, ("config.json", "scheduler_config.json"))):
        if all(os.path.isfile(os.path.join(folder, name)) for name in files):
            return subfolder
    missing = [name for name in ("unet/config.json", "scheduler/scheduler_config.json")
               if not os.path.isfile(os.path.join(folder, name))]
    raise ValueError(f"path: {folder!r} has neither {MODEL_INDEX} (a pipeline) nor unet/ and "
                     f"scheduler/ subfolders (missing {', '.join(missing)})")


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def cached_snapshot(repo_id: str, revision: Optional[str] = None) -> str:
    """The snapshot folder of `repo_id` in the local Hugging Face cache, found offline the way
    huggingface_hub finds it: refs/<revision> → snapshots/<commit>/ (a commit hash as
    revision names the snapshot directly). A miss is a ValueError naming the cache folder it
    looked in and how to download the model."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name
    cache = hub_cache()
    for filename, depth in ((MODEL_INDEX, 1), ("unet/config.json", 2), ("config.json", 1)):
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(found, str):
            folder = found
            for _ in range(depth):
                folder = os.path.dirname(folder)
            return folder
    storage = os.path.join(cache, repo_folder_name(repo_id=repo_id, repo_type="model"))
    ref = revision or "main"
    if os.path.isdir(storage):
        seen = f"{storage} holds no snapshot of revision {ref!r} with {MODEL_INDEX} or unet/config.json"
    else:
        seen = f"there is no {storage}"
    raise ValueError(
        f"path: {repo_id!r} is neither a folder nor a model in the local Hugging Face cache "
        f"({seen}; the cache is HF_HUB_CACHE, or HF_HOME/hub, here {cache}). "
        "Nothing is downloaded at load time: download it once where the Hub can be reached, "
        f"e.g. `hf download {repo_id}` or diffusers.DiffusionPipeline.download({repo_id!r}), "
        "into the same cache, then load it by id; or load a folder written by save_pretrained")


def hub_cache() -> str:
    """huggingface_hub's cache folder: HF_HUB_CACHE, else HF_HOME/hub, read from the
    environment now (huggingface_hub reads it once, when imported, and a variable set later in
    the process is meant as well), else huggingface_hub's own setting."""
    from huggingface_hub import constants
    for variable, below in (("HF_HUB_CACHE", ()), ("HUGGINGFACE_HUB_CACHE", ()), ("HF_HOME", ("hub",))):
        value = os.environ.get(variable)
        if value:
            return os.path.join(os.path.expandvars(os.path.expanduser(value)), *below)
    return constants.HF_HUB_CACHE


# -- reading the files -----------------------------------------------------------------------
def read_config(path: str) -> dict:
    """A config file as a dict, or a ValueError naming the file and what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: the file is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as text ({error})") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; expected a JSON object of settings")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column "
                         f"{error.colno}); expected a JSON object of settings") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: holds a JSON {_json_kind(config)}; expected a JSON object of "
                         "settings")
    return config


def _json_kind(value) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _config_class(path: str, allowed, what: str):
    """The diffusers class that the config at `path` names in ``_class_name``; it must be
    one of `allowed` (names) or, when `allowed` is a class, a subclass of it."""
    class_name = read_config(path).get("_class_name")
    cls = getattr(diffusers, class_name, None) if isinstance(class_name, str) else None
    if isinstance(allowed, type):
        ok = isinstance(cls, type) and issubclass(cls, allowed)
    else:
        ok = cls is not None and class_name in allowed
    if not ok:
        raise ValueError(f"{path}: _class_name {class_name!r} is not {what}")
    return cls


def _where(folder: str, subfolder: Optional[str]) -> str:
    return folder if subfolder is None else os.path.join(folder, subfolder)


def _part(folder: str, name: str) -> Optional[str]:
    """The subfolder of pipeline component `name`, or None where its files lie in the
    pipeline's own folder (older hub repos such as google/ddpm-cifar10-32), as diffusers
    reads them."""
    return name if os.path.isdir(os.path.join(folder, name)) else None


def _check_flat_part(folder: str, component: str) -> None:
    """A ValueError naming the subfolder when `component` (the unet or the scheduler) has no
    subfolder and its file is not in the pipeline's own folder either (a partial download)."""
    file = "config.json" if component == "unet" else "scheduler_config.json"
    if not os.path.isfile(os.path.join(folder, file)):
        raise ValueError(f"{folder}: {MODEL_INDEX} names a {component}, but there is no "
                         f"{component}/ subfolder (nor {file} beside {MODEL_INDEX}, the older "
                         "layout); the folder is incomplete: save or download it again")


def _load_model(folder: str, subfolder: Optional[str], cls, dtype_argument: dict):
    """A diffusers model from folder/subfolder, strictly: every weight of the network its
    config describes is in the file and every weight in the file is used."""
    where = _where(folder, subfolder)
    _check_weights_file(where)
    try:
        # Everything this logger says while loading (weights not used or newly initialised,
        # fallbacks between file formats) becomes the error below or does not apply.
        with _logger_level("diffusers.models.modeling_utils", logging.CRITICAL):
            model, info = cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True,
                                              output_loading_info=True, **_low_memory_argument(),
                                              **dtype_argument)
    except Exception as error:          # any failure of reading the folder is damage to name
        raise ValueError(f"{where}: cannot be loaded as a {cls.__name__}: {_summary(error)}") from error
    check_loading_info(where, cls.__name__, info)
    return model.eval()


def _check_weights_file(where: str) -> None:
    """A model folder must hold a weights file (.safetensors or .bin, or a sharded index)."""
    try:
        names = os.listdir(where)
    except OSError:
        raise ValueError(f"{where}: the folder is missing") from None
    if not any(name.endswith((".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json"))
               for name in names):
        raise ValueError(f"{where}: holds no weights file (diffusion_pytorch_model.safetensors, "
                         f"model.safetensors or a .bin); it has {', '.join(sorted(names)) or 'nothing'}")


def _load_transformers_model(folder: str, subfolder: Optional[str], cls,
                             dtype: Optional[torch.dtype]):
    """A transformers model (a text encoder) from folder/subfolder, as strictly."""
    where = _where(folder, subfolder)
    _check_weights_file(where)
    keywords = {} if dtype is None else {_transformers_dtype_keyword(): dtype}
    try:
        model, info = cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True,
                                          output_loading_info=True, **keywords)
    except Exception as error:
        raise ValueError(f"{where}: cannot be loaded as a {cls.__name__}: {_summary(error)}") from error
    check_loading_info(where, cls.__name__, info)
    return model.eval()


def _load_scheduler(folder: str, subfolder: Optional[str], expected: Optional[str] = None):
    path = os.path.join(_where(folder, subfolder), "scheduler_config.json")
    cls = _config_class(path, diffusers.SchedulerMixin, "a diffusers scheduler (DDPMScheduler, "
                        "DDIMScheduler, ...)")
    if expected is not None and cls.__name__ != expected:
        raise ValueError(f"{path}: _class_name {cls.__name__!r}, but {MODEL_INDEX} names the "
                         f"{subfolder or 'scheduler'} a {expected}")
    try:
        scheduler = cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True)
    except Exception as error:
        raise ValueError(f"{path}: a {cls.__name__} cannot be built from it: {_summary(error)}") from error
    try:
        scheduler_betas(scheduler)
    except ValueError as error:
        raise ValueError(f"{path}: {str(error).removeprefix('scheduler: ')}") from None
    return scheduler


def check_loading_info(where: str, class_name: str, info: dict) -> None:
    """Raise a ValueError when loading left weights missing, unused or of other shapes."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = list(info.get("mismatched_keys") or ())
    errors = list(info.get("error_msgs") or ())
    if not (missing or unexpected or mismatched or errors):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} weight{'s' if len(missing) > 1 else ''} of the "
                     f"{class_name} that config.json describes {'are' if len(missing) > 1 else 'is'} "
                     f"not in the file ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} weight{'s' if len(unexpected) > 1 else ''} in the file "
                     f"{'are' if len(unexpected) > 1 else 'is'} not used ({_few(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} of other shapes ({_few([str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in mismatched])})")
    if errors:
        parts.append(_summary(RuntimeError(errors[0])))
    raise ValueError(f"{where}: the weights do not match its config.json: {'; '.join(parts)}. "
                     "The config describes another network than the one whose weights were "
                     "saved (a changed _class_name or settings, or files of two models mixed); "
                     "loading it would leave freshly initialised weights")


def _few(names, k: int = 4) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (f", ... ({len(names) - k} more)" if len(names) > k else "")


def _summary(error: BaseException) -> str:
    """The gist of a library's error: its first lines, without advice that does not apply."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if "ignore_mismatched_sizes" not in line]
    text = " ".join(lines[:3]) or type(error).__name__
    if "size mismatch" in text:
        text = "its weights have other shapes than its config.json describes (changed " \
               "channels or sizes?): " + text
    limit = 600 if "size mismatch" in text else 300
    return text if len(text) <= limit else text[:limit] + " ..."


# -- pipelines -------------------------------------------------------------------------------
def _load_pipeline(folder: str, index: dict, dtype: Optional[torch.dtype]):
    """``DiffusionPipeline.from_pretrained`` with its models and scheduler loaded first by
    us, strictly (see `_load_model`); `index` is `_pipeline_index(folder)`."""
    loaded = {}
    for component, (library, class_name) in index.items():
        subfolder = _part(folder, component)
        if subfolder is None and component in ("unet", "scheduler"):
            _check_flat_part(folder, component)
        if library == "diffusers":
            cls = getattr(diffusers, class_name, None)
            if isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin):
                config = os.path.join(_where(folder, subfolder), "config.json")
                named = read_config(config).get("_class_name")
                if named is not None and named != class_name:
                    raise ValueError(f"{config}: _class_name {named!r}, but {MODEL_INDEX} names "
                                     f"the {component} a {class_name}")
                loaded[component] = _load_model(folder, subfolder, cls, _dtype_argument(dtype))
            elif isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin):
                loaded[component] = _load_scheduler(folder, subfolder, class_name)
        elif library == "transformers":
            import transformers
            cls = getattr(transformers, class_name, None)
            if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
                read_config(os.path.join(_where(folder, subfolder), "config.json"))
                loaded[component] = _load_transformers_model(folder, subfolder, cls, dtype)
    try:
        return diffusers.DiffusionPipeline.from_pretrained(
            folder, local_files_only=True, **_low_memory_argument(), **_dtype_argument(dtype),
            **loaded)
    except Exception as error:
        raise ValueError(f"{folder}: the pipeline cannot be loaded: {_summary(error)}") from error


def _pipeline_index(folder: str) -> dict:
    """model_index.json's components {name: (library, class)}, checked: a diffusers pipeline
    class, a UNet and a scheduler among them, every entry a [library, class] pair."""
    path = os.path.join(folder, MODEL_INDEX)
    index = read_config(path)
    class_name = index.get("_class_name")
    if class_name is None:
        raise ValueError(f"{path}: names no pipeline class (_class_name) and "
                         f"{'no' if len(index) == 0 else 'only'} components"
                         f"{'' if len(index) == 0 else ' ' + ', '.join(map(str, index))}; a "
                         "pipeline's model_index.json names its class and its components")
    cls = getattr(diffusers, class_name, None) if isinstance(class_name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise ValueError(f"{path}: _class_name {class_name!r} is not a diffusers pipeline class "
                         "(StableDiffusionPipeline, DDPMPipeline, ...)")
    components = {}
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, (list, tuple)):
            continue
        if len(value) != 2:
            raise ValueError(f"{path}: {key} is {value!r}; a component is a [library, class] pair")
        if value[0] is None and value[1] is None:
            continue                                        # a component saved as absent
        if not (isinstance(value[0], str) and isinstance(value[1], str)):
            raise ValueError(f"{path}: {key} is {value!r}; a component is a [library, class] pair")
        components[key] = tuple(value)
    for needed, allowed in (("unet", UNET_CLASSES), ("scheduler", None)):
        if needed not in components:
            raise ValueError(f"{path}: names no {needed} (its components: "
                             f"{', '.join(components) or 'none'}); compose takes pipelines with a "
                             "UNet and its scheduler")
    library, unet_class = components["unet"]
    if library != "diffusers" or unet_class not in UNET_CLASSES:
        raise ValueError(f"{path}: the unet is a {library}.{unet_class}; compose takes a "
                         f"diffusers {' or '.join(UNET_CLASSES)}")
    library, scheduler_class = components["scheduler"]
    scheduler = getattr(diffusers, scheduler_class, None) if library == "diffusers" else None
    if not (isinstance(scheduler, type) and issubclass(scheduler, diffusers.SchedulerMixin)):
        raise ValueError(f"{path}: the scheduler is a {library}.{scheduler_class}, not a "
                         "diffusers scheduler")
    return components


# -- library settings ------------------------------------------------------------------------
def _dtype_argument(dtype) -> dict:
    """from_pretrained's dtype keyword: `dtype` in recent diffusers, `torch_dtype` before."""
    if dtype is None:
        return {}
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch.dtype such as torch.float16, got {dtype!r}")
    from diffusers.utils import deprecation_utils
    renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype" if renamed else "torch_dtype": dtype}


def _transformers_dtype_keyword() -> str:
    import transformers
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _low_memory_argument() -> dict:
    """low_cpu_mem_usage=False without accelerate: what diffusers falls back to anyway, said
    here so that it does not print its five-line hint to install accelerate."""
    from diffusers.utils import is_accelerate_available
    return {} if is_accelerate_available() else {"low_cpu_mem_usage": False}


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def quiet_loading(bars: bool, text_parts: bool = False):
    """While loading: diffusers' (and, when the pipeline has transformers parts or
    transformers is imported, transformers') progress bars on only if `bars`, and the loggers
    of `_SILENCED_LOGGERS` at ERROR; everything as it was afterwards."""
    switches = [diffusers.utils.logging]
    if text_parts or "transformers" in sys.modules:
        import transformers
        switches.append(transformers.utils.logging)
    before = [module.is_progress_bar_enabled() for module in switches]
    loggers = [logging.getLogger(name) for name in _SILENCED_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for module in switches:
            (module.enable_progress_bar if bars else module.disable_progress_bar)()
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        yield
    finally:
        for module, enabled in zip(switches, before):
            (module.enable_progress_bar if enabled else module.disable_progress_bar)()
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
