"""Hyperparameters per env id from YAML files (RL Zoo style), overridable on the command line.

``agents/hyperparams/<agent>.yml`` maps an env id to the hyperparameters of one agent
(``maskable_ppo``, ``ppo``, ``reinforce``); the ``default`` entry applies to ids without an
entry of their own. A key is a command-line flag of the training script with underscores
(``learning_rate`` for ``--learning-rate``). Precedence, highest first: a flag given on the
command line, the env id's entry, the ``default`` entry, the script's built-in value. The dict
entries ``env_kwargs`` and ``policy_kwargs`` merge key by key in the same order.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import tyro
import yaml

HYPERPARAMS_DIR = Path(__file__).resolve().parent
DICT_KEYS = ("env_kwargs", "policy_kwargs")


def from_yaml(tp, builtin: Any):
    """The type of a hyperparameter flag left None until :func:`resolve` fills it (the YAML
    entry, else ``builtin``): the help says so instead of "(default: None)", and None cannot be
    typed on the command line; booleans take ``True``/``False`` as before."""
    return Annotated[tp | None, tyro.conf.arg(help_behavior_hint=f"(default: the YAML entry, else {builtin})"),
                     tyro.conf.DisallowNone, tyro.conf.FlagConversionOff]


def optional_path(metavar: str, when_unset: str = ""):
    """A path flag that may be left unset, shown as ``--flag METAVAR`` with ``when_unset`` as
    its default instead of "{None}|STR ... (default: None)"."""
    return Annotated[str | None, tyro.conf.arg(metavar=metavar, help_behavior_hint=when_unset),
                     tyro.conf.DisallowNone]


YamlFile = optional_path("FILE")  # its docstring names the packaged file used when it is unset

# Rules of check_args: (holds for an allowed value, what is allowed).
POSITIVE_INT = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
NON_NEGATIVE_INT = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
POSITIVE = (lambda v: v > 0, "a number > 0")
NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
UNIT = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
UNIT_OPEN = (lambda v: 0 <= v < 1, "a number in [0, 1)")


def hyperparams_file(agent: str) -> Path:
    """The packaged YAML file of ``agent``."""
    return HYPERPARAMS_DIR / f"{agent}.yml"


def load_section(path: str | Path, env_id: str) -> dict[str, Any]:
    """The entry of ``env_id`` (else ``default``, else empty) in the YAML file ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no hyperparameter file {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of env ids to hyperparameters, got {type(data).__name__}")
    section = data.get(env_id, data.get("default", {})) or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: the entry of {env_id!r} must be a mapping, got {section!r}")
    return section


def resolve(args, path: str | Path, defaults: dict[str, Any]):
    """``args`` (a dataclass) with every ``None`` field filled from the YAML entry of
    ``args.env_id`` in ``path``, else from ``defaults``; ``env_kwargs``/``policy_kwargs`` (JSON
    strings on the command line) merged over the YAML dicts. Returns the new args and, per
    hyperparameter, where its value came from (``cli``, ``yaml`` or ``default``)."""
    section = load_section(path, args.env_id)
    names = {f.name for f in dataclasses.fields(args)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ValueError(
            f"{path}: unknown hyperparameter {unknown[0]!r} for {args.env_id!r}; "
            f"keys are the training script's flags with underscores ({', '.join(sorted(defaults))}, "
            f"{', '.join(k for k in DICT_KEYS if k in names)})"
        )
    values, origin = {}, {}
    for name, default in defaults.items():
        cli = getattr(args, name)
        if cli is not None:
            values[name], origin[name] = cli, "cli"
        elif name in section:
            values[name], origin[name] = section[name], "yaml"
        else:
            values[name], origin[name] = default, "default"
    for name in DICT_KEYS:
        if name not in names:
            continue
        cli = json.loads(getattr(args, name) or "{}")
        if not isinstance(cli, dict):
            raise ValueError(f"--{name.replace('_', '-')} must be a JSON object, got {getattr(args, name)!r}")
        base = section.get(name) or {}
        values[name] = json.dumps({**base, **cli})
        origin[name] = "cli" if cli and not base else "yaml+cli" if cli else "yaml" if base else "default"
    return dataclasses.replace(args, **values), origin


def check_args(args, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Raise one ``ValueError`` naming the flag, its value and what is allowed for the first
    field of ``args`` that breaks its rule (NaN and non-numbers break every rule)."""
    for name, (ok, allowed) in rules.items():
        value = getattr(args, name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and ok(value)):
            raise ValueError(f"--{name.replace('_', '-')} {value!r} is not allowed: it must be {allowed}")
