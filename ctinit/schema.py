"""The typed schema machinery every config and CLI option is built from: field types, YAML 1.2 parsing, one-line
errors. The schemas themselves live with their domain: :class:`~ctinit.finetune.FinetuneConfig`,
:class:`~ctinit.meta.optim.OptimizerSpec`, the trainer's ``TrainConfig`` (training/config.py).

A schema is a dataclass validated by pydantic (``@schema``): constructing it checks every field and raises a
:class:`~ctinit.errors.ConfigError` whose message is one line naming the key, the value and what is allowed.
Configs stay plain data: :func:`to_dict` turns a schema object into dicts, lists and scalars. Adding a key is one
line in its schema class (a name, a type from this module, a default).

YAML is read as YAML 1.2 for numbers (``1e-3`` is a float, where PyYAML's YAML 1.1 resolver reads a string), by
recipes and ``key=value`` overrides alike (:func:`yaml_load`).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from .errors import ConfigError

__all__ = [
    "Bool", "Device", "Float", "Fraction", "NonNegFloat", "NonNegInt", "PositiveFloat", "PositiveInt",
    "Precision", "Seed", "Str", "YAML12Loader", "check_device", "check_option", "format_error", "schema",
    "schema_defaults", "to_dict", "validate_schema", "yaml_load",
]

# ------------------------------------------------------------------------------------------------ YAML 1.2 numbers


class YAML12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax: ``1e-3``, ``1E5`` and ``.5`` are floats (YAML 1.1 needs a
    dot and a signed exponent, so PyYAML reads ``1e-3`` as the string '1e-3'), and YAML 1.2's booleans (only
    true/false: ``off`` and ``no`` stay strings)."""


YAML12Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first, _resolvers in YAML12Loader.yaml_implicit_resolvers.items():
    _resolvers[:] = [(tag, regexp) for tag, regexp in _resolvers if tag != "tag:yaml.org,2002:float"]
_FLOAT = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
YAML12Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
# YAML 1.2's booleans: only true and false. YAML 1.1 also reads yes/no/on/off as booleans, which turned
# `compile=off` and `mixed_precision=no` into False.
for _first, _resolvers in YAML12Loader.yaml_implicit_resolvers.items():
    _resolvers[:] = [(tag, regexp) for tag, regexp in _resolvers if tag != "tag:yaml.org,2002:bool"]
YAML12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


def _construct_mapping(self, node, deep=False):
    """A mapping whose key appears twice is refused (PyYAML keeps the last silently: a recipe with ``steps`` twice
    would train with the second)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if duplicate:
                raise ConfigError(f"YAML: the key {_describe(key)} appears twice (line {key_node.start_mark.line + 1}); "
                                  "keep one")
    return yaml.SafeLoader.construct_mapping(self, node, deep=deep)


YAML12Loader.construct_mapping = _construct_mapping
# integers keep their resolver (it comes first for digits-only text, so "12" stays an int)
for _first in "0123456789-+":
    _res = YAML12Loader.yaml_implicit_resolvers[_first]
    _res.sort(key=lambda r: r[0] != "tag:yaml.org,2002:int")


#: The most nodes a YAML document may stand for once its aliases are expanded (a recipe has a few hundred): an
#: "alias bomb" (``a: &a [x, x]``, ``b: &b [*a, *a]``, ...) stands for billions from a few lines.
MAX_YAML_NODES = 100_000


def _expanded_nodes(node, sizes: dict, limit: int) -> int:
    """How many nodes ``node`` stands for with every alias expanded (each shared node counted where it is used);
    stops counting past ``limit``. A node that holds itself counts as unbounded."""
    key = id(node)
    if key in sizes:
        return sizes[key] if sizes[key] is not None else limit + 1
    sizes[key] = None  # in progress: reaching it again is a cycle
    total = 1
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
    for child in children:
        total += _expanded_nodes(child, sizes, limit)
        if total > limit:
            break
    sizes[key] = total
    return total


def yaml_load(text: str, limit: int = MAX_YAML_NODES):
    """Parse YAML with YAML 1.2 numbers (see :class:`YAML12Loader`). A document whose aliases expand to more than
    ``limit`` nodes (or that holds itself) is refused before it is built: a ConfigError, in time bounded by the
    text's length."""
    loader = YAML12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, {}, limit) > limit:
            raise ConfigError(f"YAML with aliases (&anchor / *alias) that stands for more than {limit} values, or "
                              "holds itself: write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


# ------------------------------------------------------------------------------------------------ field types

Float = Annotated[StrictFloat, Field(allow_inf_nan=False)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
#: Seeds: meta-training derives per-task seeds as ``seed * 1000 + index``, which must stay a 64-bit integer.
Seed = Annotated[StrictInt, Field(ge=0, le=2**53 - 1)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegFloat = Annotated[Float, Field(ge=0)]
Fraction = Annotated[Float, Field(gt=0, lt=1)]
Bool = StrictBool
Str = StrictStr
#: ``auto``: bf16 where the CPU has bf16 hardware and the run measures it faster, else fp32 (ctinit/execution/precision.py)
Precision = Literal["no", "bf16", "fp16", "auto"]
#: ``--device``: None (what Accelerate picks), cpu, cuda or cuda:N.
Device = Optional[Annotated[StrictStr, Field(pattern=r"^(cpu|cuda(:[0-9]+)?)$")]]

_CONFIG = ConfigDict(extra="forbid")


def _describe(value) -> str:
    """A value as an error line quotes it: its repr, cut to 80 characters, in time bounded whatever its size (never
    the repr of the whole value first)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    text = short.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_error(error: ValidationError, prefix: str = "") -> str:
    """The first problem of a pydantic ValidationError as one line: key, value, what is allowed."""
    first = error.errors(include_url=False)[0]
    # (pydantic adds the branch of a union to the location, e.g. "literal['a','b']": not a key, left out)
    key = ".".join(str(p) for p in first["loc"] if isinstance(p, int) or re.fullmatch(r"[A-Za-z_][\w-]*", str(p)))
    where = f"{prefix}{key}" if key else prefix.rstrip(".") or "config"
    message = first["msg"]
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{where}: unknown key"
    if first["type"] == "missing":
        return f"{where}: missing (required)"
    message = message[0].lower() + message[1:]
    return f"{where} = {_describe(first.get('input'))}: {message}"


def schema(cls=None, *, prefix: str = ""):
    """Make ``cls`` a validated dataclass: constructing (or ``dataclasses.replace``-ing) it checks every field and
    raises a one-line ConfigError (``prefix`` starts the key, e.g. ``"--"`` for CLI options)."""
    if cls is None:
        return functools.partial(schema, prefix=prefix)
    cls = _pydantic_dataclass(cls, config=_CONFIG)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except ValidationError as e:
            raise ConfigError(format_error(e, prefix)) from None

    cls.__init__ = __init__
    return cls


def validate_schema(cls, data: dict, prefix: str = ""):
    """``cls(**data)`` for a mapping read from a file, with the same one-line errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {_describe(data)}")
    try:
        return cls.__pydantic_validator__.validate_python(data)
    except ValidationError as e:
        raise ConfigError(format_error(e, prefix)) from None


def check_option(name: str, value, type_) -> Any:
    """Validate one value (a CLI option) against a field type; a one-line ConfigError naming ``name``."""
    try:
        return TypeAdapter(type_).validate_python(value)
    except ValidationError as e:
        raise ConfigError(format_error(e, name)) from None


def check_device(device: str | None, option: str = "--device") -> str | None:
    """cpu, cuda or cuda:N, and a CUDA device must exist here."""
    device = check_option(option, device, Device)
    if device is not None and device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"{option} = {device!r}: no such CUDA device on this machine "
                              f"({count} visible); use --device cpu")
    return device


def to_dict(obj) -> Any:
    """A schema object as plain data (dicts, lists, scalars); tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def schema_defaults(cls) -> dict:
    """Every field's default, as plain data (the schema is the one place defaults live)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default_factory())
    return out
