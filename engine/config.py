"""Settings: defaults < batchtui.toml < BATCHTUI_* environment < flags, validated once.

The result is one frozen :class:`BatchConfig` that every part of the engine receives and that
the manifest stores, so no part can run with a config another part did not validate.
Unknown keys are errors, not silently ignored.

Every number is finite and bounded (:data:`NUMBER_BOUNDS`): an "infinite" timeout passed
validation once, then overflowed the OS's timers in every item after its command had started.
Settings that run code (:data:`CODE_SETTINGS`) are refused from a batchtui.toml that was only
found in the current folder: a downloaded data folder must not run its own commands.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .adaptive import MIN_FLOOR_S, AdaptiveLimit, split_timeout
from .basemodel import Model
from .config_env import ENV_PREFIX, env_layer, refuse_rule_twice
from .config_errors import describe_errors, fmt_number, has_bool, near_setting, union_settings, untrusted_message
from .config_file import read_toml
from .errors import EMPTY_MEANS_NONE, UserError
from .events import EventHook, parse_hooks
from .outputs import DEFAULT_MAX_RESULT_BYTES, MAX_COST, MAX_RESULT_BYTES_CAP, parse_size

CONFIG_FILENAME: Final = "batchtui.toml"
DEFAULT_OUTPUT_DIR: Final = "./batch_output"

#: The longest any duration may be: 30 days. Longer is a typo or an "infinity" (the OS's timers
#: overflow on 1e10 s).
MAX_SECONDS: Final = 30 * 86400.0
MAX_RATE: Final = 1e6  # items a second
MAX_MEMORY_MB: Final = float(1 << 30)  # 1 PiB
MAX_AGE_DAYS: Final = 36500.0  # cleanup --max-age-days: a hundred years
MAX_HOOK_S: Final = 3600.0  # --hook-timeout: the end of a run waits for its hooks
#: Why a number under a floor above zero is refused, said with it. --memory-limit-mb counts the
#: engine and its children: the engine alone uses about 50 MB (80 with a process pool).
FLOOR_WHY: Final = {
    "timeout": "10 ms, as min= of --timeout N%: no item even starts sooner",
    "memory_limit_mb": "the engine alone uses about 50 MB: under 128, dispatch would wait for good",
}

#: (lowest, lowest excluded, highest) of every number a flag, batchtui.toml or BATCHTUI_* sets,
#: and of the CLI's own numbers that are not settings (lock_wait, wait, max_size_mb,
#: max_age_days). Every value is also finite. The CLI checks its options with
#: :func:`check_number` as it parses them, the config model with the same table.
NUMBER_BOUNDS: Final[dict[str, tuple[float, bool, float]]] = {
    "timeout": (MIN_FLOOR_S, False, MAX_SECONDS),
    "grace": (0.0, False, MAX_SECONDS),
    "backoff": (0.0, False, MAX_SECONDS),
    "backoff_max": (0.0, False, MAX_SECONDS),
    "progress_interval": (0.1, False, MAX_SECONDS),
    "max_failure_rate": (0.0, False, 1.0),
    "max_cost": (0.0, False, MAX_COST),
    "rate": (1 / MAX_SECONDS, False, MAX_RATE),  # at least one item in 30 days
    "memory_limit_mb": (128.0, False, MAX_MEMORY_MB),
    "lock_wait": (0.0, False, MAX_SECONDS),
    "wait": (0.0, False, MAX_SECONDS),
    "max_size_mb": (0.0, False, MAX_MEMORY_MB),
    "max_age_days": (0.0, False, MAX_AGE_DAYS),
    "hook_timeout": (0.0, True, MAX_HOOK_S),
}

#: The settings among them (the rest are the CLI's own).
NUMBER_FIELDS: Final = (
    "timeout",
    "grace",
    "backoff",
    "backoff_max",
    "progress_interval",
    "max_failure_rate",
    "max_cost",
    "rate",
    "memory_limit_mb",
    "hook_timeout",
)

#: Every setting that takes a number (or a list of them). TOML and JSON have true and false, which
#: pydantic would read as 1 and 0: `timeout = true` was a one-second timeout, `workers = true` one
#: worker. Only `fsync` takes true or false.
NUMERIC_FIELDS: Final = (
    *NUMBER_FIELDS,
    *("workers", "window", "max_attempts", "min_items", "log_limit", "chunk_size", "max_result_bytes"),
    *("retry_exit_codes", "fatal_exit_codes"),
)

_EXIT_TYPE: Final = re.compile(r"exit \d+")
#: Settings that run or load code: `on_finish` and `on_event` are shell commands; `scheduler` is a dask
#: scheduler whose results this process unpickles (which can run anything). They are refused
#: from a batchtui.toml found implicitly in the current folder (see :func:`load_config`).
#: (`--cmd` and `--call` are no settings: a config file cannot set them.)
CODE_SETTINGS: Final = frozenset({"on_finish", "on_event", "scheduler"})


#: What a batch made before the floors of :data:`FLOOR_WHY` may store (a resume reads it, and a
#: flag given then replaces it): more than 0, as it was.
STORED_FLOOR: Final = (0.0, True)


def check_number(name: str, value: float, *, stored: bool = False, typed: str | None = None) -> float:
    """``value`` when it is finite and within the bounds of ``name`` (:data:`NUMBER_BOUNDS`);
    else ValueError saying why, e.g. ``inf is not a finite number``. ``stored``: the value a
    batch's manifest holds, which is not refused for a floor it was made before. ``typed``: the
    text it was read from, which a message about a value that is not finite quotes (``1e400``,
    not the ``inf`` it reads as)."""
    if not math.isfinite(value):
        raise ValueError(f"{typed.strip() if typed else value} is not a finite number")
    low, low_open, high = NUMBER_BOUNDS[name]
    if stored and name in FLOOR_WHY:
        low, low_open = STORED_FLOOR
    if value < low or (low_open and value == low):
        why = f" ({FLOOR_WHY[name]})" if name in FLOOR_WHY else ""
        raise ValueError(f"{fmt_number(value)} must be {'more than' if low_open else 'at least'} {low:g}{why}")
    if value > high:
        days = " (30 days)" if high == MAX_SECONDS else ""
        raise ValueError(f"{fmt_number(value)} is more than the maximum, {fmt_number(high)}{days}")
    return value


def _default_workers() -> int:
    return max(2, os.cpu_count() or 2)


class BatchConfig(Model):
    """The full effective configuration of a batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    output_dir: str = DEFAULT_OUTPUT_DIR
    name: str | None = None
    executor: Literal["thread", "process", "dask"] | None = Field(
        default=None, description="None: thread for shell commands, process for Python callables"
    )
    scheduler: str | None = None
    workers: int = Field(default_factory=_default_workers, ge=1, le=4096)
    window: int | None = Field(
        default=None, ge=1, le=1_000_000, description="items in flight at most; default 4x workers"
    )
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=60.0, ge=0)
    timeout: float | None = None  # bounds: NUMBER_BOUNDS (the floor said as the flag says it)
    adaptive_timeout: AdaptiveLimit | None = Field(
        default=None, description="--timeout P%: the limit follows the median success (engine/adaptive.py)"
    )
    grace: float = Field(default=10.0, ge=0)
    max_failure_rate: float | None = Field(default=None, ge=0, le=1)
    min_items: int = Field(default=20, ge=1, le=10**12)
    max_cost: float | None = Field(default=None, ge=0)
    rate: float | None = Field(default=None, gt=0, description="items per second, token bucket")
    limit_by: str | None = Field(
        default=None,
        description="TEMPLATE RATE[,CONCURRENCY]: a token bucket and an in-flight cap per key (engine/limits.py)",
    )
    memory_limit_mb: float | None = Field(default=None, gt=0)
    retry_exit_codes: tuple[int, ...] = ()
    fatal_exit_codes: tuple[int, ...] = ()
    transient_errors: tuple[str, ...] = ()
    chunk_size: int | Literal["auto"] | None = None
    fsync: bool = True
    on_finish: str | None = None
    on_event: tuple[EventHook, ...] = Field(
        default=(), description="--on-event KINDS CMD: CMD gets each event of KINDS as JSON on stdin"
    )
    hook_timeout: float = Field(default=60.0, gt=0, description="seconds a hook may run before it is killed")
    progress_interval: float = Field(default=2.0, gt=0)
    log_limit: int = Field(default=1 << 20, ge=0, le=1 << 40)
    max_result_bytes: int = Field(
        default=DEFAULT_MAX_RESULT_BYTES,
        ge=1,
        le=MAX_RESULT_BYTES_CAP,
        description="an item whose result's JSON is larger fails with ResultTooLarge; 16M, 512K, at most 512M",
    )
    theme: str = "dark"

    @field_validator("rate", mode="before")
    @classmethod
    def _parse_rate(cls, value: Any) -> Any:
        return parse_rate(value) if isinstance(value, str) else value

    @field_validator("limit_by", mode="before")
    @classmethod
    def _limit_by(cls, value: Any) -> Any:
        # The CLI gives (TEMPLATE, RATE[,CONCURRENCY]); batchtui.toml and BATCHTUI_LIMIT_BY one string.
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value):
            value = f"{value[0]} {''.join(value[1].split())}"  # '5/s, 4' is one RATE,CONCURRENCY
        if isinstance(value, str):
            from .limits import parse_limit_by

            parse_limit_by(value)  # ValueError: what is wrong
            return value.strip()
        return value

    @field_validator("on_event", mode="before")
    @classmethod
    def _parse_hooks(cls, value: Any) -> Any:
        return parse_hooks(value)

    @field_validator("max_result_bytes", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("retry_exit_codes", "fatal_exit_codes", "transient_errors", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, int):
            return (value,)
        return value

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _chunk(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("chunk_size")
    @classmethod
    def _chunk_positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 1_000_000:
            raise ValueError("must be 1 to 1000000 or 'auto'")
        return value

    @field_validator(*NUMBER_FIELDS, mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        # Before pydantic's own bounds, which would call nan "not greater than 0".
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                return value
            if not math.isfinite(number):
                raise ValueError(f"{value} is not a finite number")
        return value

    @field_validator(*NUMBER_FIELDS)
    @classmethod
    def _bounded(cls, value: float | None, info: ValidationInfo) -> float | None:
        # The context names the settings that come from a batch's stored config (load_config,
        # stored_config): those keep the bounds they were made with.
        stored = isinstance(info.context, dict) and info.field_name in info.context.get("stored", ())
        return None if value is None else check_number(str(info.field_name), value, stored=stored)

    @model_validator(mode="before")
    @classmethod
    def _adaptive_timeout(cls, data: Any) -> Any:
        # timeout = "300%,min=5s,max=60s" (a flag, a config file, the environment) is two
        # settings: the adaptive rule, and the absolute limit (max=, or none).
        if isinstance(data, dict) and isinstance(data.get("timeout"), str) and "%" in data["timeout"]:
            try:
                maximum, rule = split_timeout(data["timeout"])
            except ValueError:
                return data  # said by _timeout_text, with the setting's name and origin
            return {**data, "timeout": maximum, "adaptive_timeout": rule}
        return data

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_text(cls, value: Any) -> Any:
        # Defined after _finite so it runs before it (pydantic runs "before" validators last
        # defined first): "abc%" is told as a timeout, not as "not a valid number".
        return split_timeout(value)[0] if isinstance(value, str) else value

    @field_validator(*NUMERIC_FIELDS, mode="before")
    @classmethod
    def _not_boolean(cls, value: Any) -> Any:
        # The last "before" validator defined, so the first to run: a boolean is refused as such,
        # before any other validator reads it as a number (a list's items too: [3, true]).
        if has_bool(value):
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str | None, info: ValidationInfo) -> str | None:
        stored = isinstance(info.context, dict) and "name" in info.context.get("stored", ())
        if value is not None and not value.strip() and not stored:
            raise ValueError("is blank: give a name, or leave it out")
        return value

    @field_validator("on_finish", mode="before")
    @classmethod
    def _blank_command_is_none(cls, value: Any) -> Any:
        # Empty means none (EMPTY_MEANS_NONE); blanks run nothing either, so they mean none too
        # (stored as the empty one is) rather than a hook that is "set" and does nothing.
        return "" if isinstance(value, str) and not value.strip() else value

    @field_validator("transient_errors")
    @classmethod
    def _error_names(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # Matched against a Python exception's type (engine/errors.py): its class name, or a
        # dotted one for a class named like batchtui's own; any other text never matches. A
        # batch's stored config keeps what it was made with (a resume is not refused for it).
        if isinstance(info.context, dict) and "transient_errors" in info.context.get("stored", ()):
            return value
        for name in value:
            if _EXIT_TYPE.fullmatch(name):
                raise ValueError(f"{name!r} is an exit code: give it to --retry-exit-codes")
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(
                    f"{name!r} is no exception name (a class name such as HTTPError, or mylib.HTTPError):"
                    " no error could ever match it"
                )
        return value

    @field_validator("retry_exit_codes", "fatal_exit_codes")
    @classmethod
    def _exit_codes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [code for code in value if not 0 <= code <= 255]
        if bad:
            raise ValueError(f"exit codes are 0 to 255, not {bad[0]}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BatchConfig:
        both = set(self.retry_exit_codes) & set(self.fatal_exit_codes)
        if both:
            raise ValueError(f"exit codes {sorted(both)} are both retryable and fatal")
        if 0 in self.retry_exit_codes or 0 in self.fatal_exit_codes:
            raise ValueError("exit code 0 means success; it cannot be retryable or fatal")
        if self.backoff_max < self.backoff:
            raise ValueError("backoff_max must be at least backoff")
        if self.scheduler and self.executor not in (None, "dask"):
            raise ValueError(
                f"scheduler only applies to the dask executor, not the {self.executor} one:"
                " add --executor dask, or leave the scheduler out"
            )
        return self

    def resolved_executor(self, processor_kind: str) -> str:
        if self.executor:
            return self.executor
        return "process" if processor_kind == "python" else "thread"


#: Knobs that may differ on resume (recorded in the manifest's history); everything else is
#: the batch's identity and comes from the stored config.
OPERATIONAL: Final = frozenset(
    "workers window rate limit_by timeout adaptive_timeout grace max_failure_rate min_items max_cost"  # noqa: SIM905
    " memory_limit_mb max_attempts backoff backoff_max fsync on_finish on_event hook_timeout"
    " progress_interval executor scheduler theme max_result_bytes".split()
)

_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float:
    """Parse ``"10"``, ``"10/s"``, ``"600/m"`` or ``"100/h"`` into items per second."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"rate {text!r} is not N, N/s, N/m or N/h")
    rate = float(match.group(1)) / _PER[match.group(2) or "s"]
    if rate <= 0:
        raise ValueError(f"rate {text!r} must be more than 0 (e.g. 5/s, 100/m or 1/h)")
    return rate


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    on_file: Callable[[Path, bool], None] | None = None,
    implicit_code: Literal["refuse", "drop"] = "refuse",
) -> BatchConfig:
    """Merge the layers and validate once.

    ``base`` replaces the defaults (a resumed batch's stored config); ``flags`` holds only
    the options the user actually gave (None values are dropped). ``on_file(path, explicit)``
    is told of each config file read (the CLI says which on stderr).

    A batchtui.toml found in the current folder (not named by ``config_file``) may not set
    :data:`CODE_SETTINGS`: UserError saying how to allow it, or, with ``implicit_code="drop"``
    (a command that only needs the output dir, like ``ls``), they are left out.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if base:
        layers.append(("stored config", base))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            # /dev/null or a fifo exists: "does not exist" sent the user looking for a typo.
            what = "is not a regular file" if path.exists() else "does not exist"
            raise UserError(f"config file {path} {what}")
        layers.append((str(path), read_toml(path)))
        refuse_rule_twice(f"config file {path}", layers[-1][1])
        if on_file is not None:
            on_file(path, True)
    elif base is None:
        default = (cwd or Path.cwd()) / CONFIG_FILENAME
        if default.is_file():
            found = read_toml(default)
            if on_file is not None:
                on_file(default, False)
            code = sorted(CODE_SETTINGS & found.keys())
            if code and implicit_code == "refuse":
                raise UserError(untrusted_message(default, code))
            refuse_rule_twice(f"config file {default}", found)
            layers.append((str(default), {k: v for k, v in found.items() if k not in CODE_SETTINGS}))
        elif os.path.lexists(default):
            # A folder, a fifo, a broken link in its place was passed over without a word, and
            # the settings meant to be in it were not in force.
            kind = "a folder" if default.is_dir() else "a broken symbolic link" if not default.exists() else None
            raise UserError(
                f"{default} is not a regular file ({kind or 'a fifo, a device or a socket'}): batchtui reads"
                f" the settings of a {CONFIG_FILENAME} in the current folder; put the file there, or rename this"
            )
    env, names = env_layer(os.environ if environ is None else environ, BatchConfig.model_fields, _near_setting)
    refuse_rule_twice("the environment", env, names)
    layers.append(("environment", env))
    _refuse_empty(layers)
    layers.append(("flags", {k: v for k, v in (flags or {}).items() if v is not None}))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for label, layer in layers:
        if "timeout" in layer and "adaptive_timeout" not in layer:
            merged.pop("adaptive_timeout", None)  # a timeout given replaces the whole rule (resume --timeout 30)
        for key, value in layer.items():
            merged[key] = value
            origin[key] = label
    # `resume --executor process` of a batch that ran on a dask cluster: the batch moves off it,
    # and the cluster's address goes with the executor that used it (the engine first makes sure
    # nothing of the batch still runs there: engine/dask_leave.py).
    moved = origin.get("executor") not in (None, "stored config") and merged.get("executor") not in (None, "dask")
    if moved and origin.get("scheduler") == "stored config":
        merged["scheduler"] = None
    stored = {key for key, label in origin.items() if label == "stored config"}
    try:
        return BatchConfig.model_validate(merged, context={"stored": stored})
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, origin)) from None


def _refuse_empty(layers: list[tuple[str, Mapping[str, Any]]]) -> None:
    """An empty text in a config file or the environment (``BATCHTUI_OUTPUT_DIR=``: an unset
    variable?) is refused as the empty flag is (tui/cli/group.py), never read as "not given"."""
    empty = [
        f"  {ENV_PREFIX + key.upper() if label == 'environment' else key}: is empty (an unset shell variable?):"
        f" give a value, or leave it out (from {label})"
        for label, layer in layers
        if label != "stored config"
        for key, value in layer.items()
        if value == "" and key not in EMPTY_MEANS_NONE
    ]
    if empty:
        raise UserError("\n".join(["invalid configuration:", *empty]))


def stored_config(config: Mapping[str, Any], manifest: Path) -> BatchConfig:
    """The config a batch's manifest stores, validated; UserError naming each bad key and value
    (a manifest edited by hand, or written by a newer batchtui with settings this one lacks)."""
    try:
        return BatchConfig.model_validate(config, context={"stored": set(config)})
    except ValidationError as exc:
        text = format_validation_error(exc, dict.fromkeys(config, str(manifest)))
        if any(err["type"] == "extra_forbidden" for err in exc.errors()):
            text += "\n  (unknown settings: was the batch made by a newer batchtui? then upgrade)"
        raise UserError(text.replace("invalid configuration:", "invalid stored configuration:", 1)) from None


def format_validation_error(exc: ValidationError, origin: Mapping[str, str]) -> str:
    """A readable multi-line message naming each bad setting and where it came from."""
    fields = BatchConfig.model_fields
    return describe_errors(exc.errors(), origin, list(fields), union_settings(fields))


def _near_setting(name: str) -> str | None:
    """The setting a misspelt name ("wrokers") most likely meant, if any is close."""
    return near_setting(name, list(BatchConfig.model_fields))


def operational_overrides(stored: BatchConfig, new: BatchConfig) -> dict[str, Any]:
    """The operational knobs a resume changed, as {name: new value}."""
    old = stored.model_dump(mode="json")
    cur = new.model_dump(mode="json")
    return {k: cur[k] for k in sorted(OPERATIONAL) if old.get(k) != cur.get(k)}
