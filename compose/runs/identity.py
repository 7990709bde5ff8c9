"""The identity of a run's components: a SHA-256 over what decides their outputs.

A resumed run must continue with the components it started with, or its blocks would mix the
samples of two models. The digest covers, for each binding name (sorted):

    an nn.Module (every compose component is one)   its class, repr, parameters and buffers
                                                    (non-persistent ones too) by name, dtype
                                                    and bytes, and the public attributes of
                                                    it and its submodules (a plain-function
                                                    network, a schedule, flags)
    a Python function (a lambda, a closure)         its code (bytecode, constants, names,
                                                    nested code), defaults, the contents of
                                                    its closure cells and the globals it names
                                                    (but module-level numbers and strings)
    a bound method, functools.partial               the function and what it is bound to
    tensors, arrays, numbers, strings, containers   their values (tensors by dtype, shape and
                                                    bytes)
    a class defined outside the libraries           the code of its methods
    another object                                  its class and its public attributes

and the bytes of the file the components came from, when given. Functions, classes and
modules of the libraries (torch, numpy, compose, diffusers, ..., the standard library) are
identified by their qualified names: the versions are recorded with the run. Attributes whose
names start with "_" (caches, hooks, counters) and a component's `name` are not part of it,
but in a class of the user's own (built on object or nn.Module alone) they are.

What cannot be hashed (an object without attributes reached from a user's function, such as a
torch.Generator or an open file in a closure, or a structure nested too deep) is listed in
`unverified`; a resume is then refused unless the caller vouches for the components
(``trust_components=True``, ``--trust-components``): equal digests would not prove anything.
"""
from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import pathlib
import sys
import types
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

#: Top-level packages whose functions and classes are identified by name (their versions are
#: recorded with the run), besides the standard library.
LIBRARIES = frozenset({"torch", "numpy", "compose", "diffusers", "transformers", "pyro",
                       "scipy", "safetensors", "huggingface_hub", "accelerate", "einops",
                       "tokenizers", "PIL", "matplotlib", "tqdm", "lark", "builtins"})
#: Deeper than this, a value is not followed (and listed as unverified where it matters).
DEPTH = 40
#: Immutable values that their repr identifies.
VALUES = (torch.dtype, torch.device, torch.Size, np.dtype, range, slice, pathlib.PurePath,
          enum.Enum, decimal.Decimal, fractions.Fraction, datetime.date, datetime.time,
          datetime.timedelta, uuid.UUID)


@dataclass(frozen=True)
class ComponentsIdentity:
    """The digest of a run's components and what in them could not be hashed (descriptions
    such as "p.net: closure 'gen': holds a torch._C.Generator, which cannot be hashed")."""

    digest: str
    unverified: List[str]

    @classmethod
    def of(cls, components: Dict[str, object], source: Optional[bytes] = None) -> "ComponentsIdentity":
        hasher = _Hasher()
        if source is not None:
            hasher.update("source", source)
        for name in sorted(components):
            hasher.update("binding", name.encode())
            hasher.feed(components[name], name, strict=True, depth=0)
        return cls(hasher.h.hexdigest(), hasher.unverified)

    def describe(self, most: int = 3) -> str:
        shown = "; ".join(self.unverified[:most])
        more = len(self.unverified) - most
        return shown + (f"; and {more} more" if more > 0 else "")


#: What nn.Module itself keeps in an instance (parameters, buffers, hooks): hashed otherwise.
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))


def _own_class(cls: type) -> bool:
    """A class outside the libraries whose bases are its own, object or nn.Module."""
    return not any(_library(klass) for klass in cls.__mro__
                   if klass not in (object, torch.nn.Module))


def _library(thing) -> bool:
    module = getattr(thing, "__module__", None)
    if not isinstance(module, str):
        return False
    top = module.split(".")[0]
    return top in LIBRARIES or top in sys.stdlib_module_names


def _qualified(thing) -> str:
    return f"{getattr(thing, '__module__', '?')}.{getattr(thing, '__qualname__', type(thing).__qualname__)}"


def _kind(value) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _global_names(code: types.CodeType) -> List[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return sorted(names)


class _Hasher:
    def __init__(self):
        self.h = hashlib.sha256()
        self.unverified: List[str] = []
        self._seen: Dict[int, int] = {}
        self._alive: List[object] = []          # keeps seen objects alive, so ids stay unique

    def update(self, tag: str, data: bytes = b"") -> None:
        self.h.update(tag.encode() + b"\x00" + str(len(data)).encode() + b"\x00" + data)

    def feed(self, value, where: str, strict: bool, depth: int) -> None:
        if value is None or isinstance(value, (bool, int, str, bytes, complex)):
            self.update(type(value).__name__, repr(value).encode())
            return
        if isinstance(value, float):
            self.update("float", value.hex().encode())
            return
        if isinstance(value, np.generic):
            self.update(f"numpy {value.dtype}", value.tobytes())
            return
        if depth > DEPTH:
            if strict:
                self.unverified.append(f"{where}: nested too deep to follow")
            self.update("deep", _kind(value).encode())
            return
        key = id(value)
        if key in self._seen:                   # shared or cyclic: a reference to the first
            self.update("seen", str(self._seen[key]).encode())
            return
        self._seen[key] = len(self._seen)
        self._alive.append(value)
        deeper = depth + 1
        if isinstance(value, torch.Tensor):
            self._tensor(value, where, strict)
        elif isinstance(value, np.ndarray):
            if value.dtype == object:
                self.update("object array", str(value.shape).encode())
                for i, item in enumerate(value.reshape(-1).tolist()):
                    self.feed(item, f"{where}[{i}]", strict, deeper)
            else:
                self.update(f"array {value.dtype} {value.shape}", np.ascontiguousarray(value).tobytes())
        elif isinstance(value, (list, tuple)):
            self.update(type(value).__name__, str(len(value)).encode())
            for i, item in enumerate(value):
                self.feed(item, f"{where}[{i}]", strict, deeper)
        elif isinstance(value, dict):
            self.update("dict", str(len(value)).encode())
            for k in sorted(value, key=repr):
                self.feed(k, f"{where} key", strict, deeper)
                self.feed(value[k], f"{where}[{k!r:.30}]", strict, deeper)
        elif isinstance(value, (set, frozenset)):
            self.update("set", str(len(value)).encode())
            for item in sorted(value, key=repr):
                self.feed(item, f"{where} item", strict, deeper)
        elif isinstance(value, torch.nn.Module):
            self._module(value, where, strict, deeper)
        elif isinstance(value, types.FunctionType):
            self._function(value, where, strict, deeper)
        elif isinstance(value, types.MethodType):
            self.update("method", value.__func__.__name__.encode())
            self.feed(value.__func__, where, strict, deeper)
            self.feed(value.__self__, f"{where} (its object)", strict, deeper)
        elif isinstance(value, functools.partial):
            self.update("partial")
            self.feed(value.func, where, strict, deeper)
            self.feed(value.args, f"{where} arguments", strict, deeper)
            self.feed(value.keywords, f"{where} keywords", strict, deeper)
        elif isinstance(value, (type, types.ModuleType, types.BuiltinFunctionType,
                                types.WrapperDescriptorType, types.MethodWrapperType,
                                types.MethodDescriptorType)) \
                or value is Ellipsis or value is NotImplemented:
            if isinstance(value, type) and not _library(value):
                self._class(value, where, strict, deeper)
            else:
                self.update("named", (getattr(value, "__name__", "") + " " + _qualified(value)).encode())
        elif isinstance(value, VALUES):
            self.update(_kind(value), repr(value).encode())
        elif isinstance(value, types.CodeType):
            self._code(value, where, strict, deeper)
        else:
            self._object(value, where, strict, deeper)

    def _tensor(self, tensor: torch.Tensor, where: str, strict: bool) -> None:
        self.update("tensor", f"{tensor.dtype} {tuple(tensor.shape)}".encode())
        try:
            data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        except (RuntimeError, TypeError, ValueError) as error:     # sparse, meta, ...
            if strict:
                self.unverified.append(f"{where}: a tensor whose values cannot be read ({error})")
            return
        self.h.update(data)

    def _code(self, code: types.CodeType, where: str, strict: bool, depth: int) -> None:
        # not its file name, line numbers or name: moving a function changes nothing it does
        self.update("code", code.co_code)
        self.update("names", " ".join(code.co_names + code.co_varnames + code.co_freevars).encode())
        self.update("counts", f"{code.co_argcount} {code.co_kwonlyargcount} {code.co_flags}".encode())
        self.feed(code.co_consts, f"{where} constants", strict, depth)

    def _function(self, fn: types.FunctionType, where: str, strict: bool, depth: int) -> None:
        if _library(fn):
            self.update("named", _qualified(fn).encode())
            return
        self.update("function")
        code = fn.__code__
        self._code(code, where, strict, depth)
        self.feed(fn.__defaults__, f"{where} defaults", strict, depth)
        self.feed(fn.__kwdefaults__, f"{where} keyword defaults", strict, depth)
        for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:                  # a cell not yet filled
                self.update("empty cell", name.encode())
                continue
            self.update("cell", name.encode())
            self.feed(contents, f"{where}: closure '{name}'", strict, depth)
        for name in _global_names(code):
            value = fn.__globals__.get(name)
            # module-level numbers and strings are left out: they are often read from the
            # environment (a delay, a device name) and rarely what makes two models differ
            if name in fn.__globals__ and not isinstance(value, (bool, int, float, complex, str, bytes)):
                self.update("global", name.encode())
                self.feed(value, f"{where}: global '{name}'", strict, depth)

    def _class(self, cls: type, where: str, strict: bool, depth: int) -> None:
        """A class defined outside the libraries: its name and the code of its methods (and of
        its bases outside the libraries)."""
        for klass in cls.__mro__:
            if _library(klass):
                self.update("base", _qualified(klass).encode())
                continue
            self.update("class", _qualified(klass).encode())
            for name, member in sorted(vars(klass).items()):
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if isinstance(member, types.FunctionType):
                    self.update("member", name.encode())
                    self.feed(member, f"{where}: {klass.__qualname__}.{name}", strict, depth)

    def _attributes(self, value, where: str, strict: bool, depth: int, skip=()) -> None:
        # a class of the user's own (on object or nn.Module alone) keeps no library caches:
        # its private attributes are its own settings (self._scale) and count too
        private = _own_class(type(value))
        for name, attribute in sorted(vars(value).items()):
            if (name.startswith("_") and not (private and name not in _MODULE_INTERNALS)) \
                    or name in skip or isinstance(attribute, torch.nn.Module):
                continue
            self.update("attribute", name.encode())
            self.feed(attribute, f"{where}.{name}", strict, depth)

    def _module(self, module: torch.nn.Module, where: str, strict: bool, depth: int) -> None:
        from ..components import Component
        self.update("module", repr(module).encode())
        for kind, named in (("parameter", module.named_parameters(remove_duplicate=False)),
                            ("buffer", module.named_buffers(remove_duplicate=False))):
            for key, tensor in named:
                self.update(kind, key.encode())
                self._tensor(tensor, f"{where}: {kind} '{key}'", strict)
        for key, sub in module.named_modules(remove_duplicate=False):
            self.update("submodule", key.encode())
            inner = f"{where}.{key}" if key else where
            self.feed(type(sub), inner, strict, depth)
            component = isinstance(sub, Component)
            self._attributes(sub, inner, strict and (component or not _library(type(sub))), depth,
                             skip=("training", "name") if component else ("training",))

    def _object(self, value, where: str, strict: bool, depth: int) -> None:
        kind = type(value)
        self.feed(kind, where, strict, depth)
        wrapped = getattr(value, "__wrapped__", None) if _library(kind) else None
        if wrapped is not None:             # functools.lru_cache, cache, wraps: what they call
            self.update("wrapped")
            self.feed(wrapped, f"{where} (wrapped)", strict, depth)
        if hasattr(value, "__dict__") and isinstance(vars(value), dict):
            self._attributes(value, where, strict and not _library(kind), depth)
        elif strict:
            self.unverified.append(f"{where}: holds a {_kind(value)}, which cannot be hashed")
