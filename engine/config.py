"""Settings: defaults < batchtui.toml < BATCHTUI_* environment < flags, validated once.

The result is one frozen :class:`BatchConfig` that every part of the engine receives and that
the manifest stores, so no part can run with a config another part did not validate.
Unknown keys are errors, not silently ignored.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError

CONFIG_FILENAME: Final = "batchtui.toml"
ENV_PREFIX: Final = "BATCHTUI_"
DEFAULT_OUTPUT_DIR: Final = "./batch_output"


def _default_workers() -> int:
    return max(2, os.cpu_count() or 2)


class BatchConfig(BaseModel):
    """The full effective configuration of a batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    output_dir: str = DEFAULT_OUTPUT_DIR
    name: str | None = None
    executor: Literal["thread", "process", "dask"] | None = Field(
        default=None, description="None: thread for shell commands, process for Python callables"
    )
    scheduler: str | None = None
    workers: int = Field(default_factory=_default_workers, ge=1, le=4096)
    window: int | None = Field(default=None, ge=1, description="items in flight at most; default 4x workers")
    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=60.0, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    grace: float = Field(default=10.0, ge=0)
    max_failure_rate: float | None = Field(default=None, ge=0, le=1)
    min_items: int = Field(default=20, ge=1)
    max_cost: float | None = Field(default=None, ge=0)
    rate: float | None = Field(default=None, gt=0, description="items per second, token bucket")
    memory_limit_mb: float | None = Field(default=None, gt=0)
    retry_exit_codes: tuple[int, ...] = ()
    fatal_exit_codes: tuple[int, ...] = ()
    transient_errors: tuple[str, ...] = ()
    chunk_size: int | Literal["auto"] | None = None
    fsync: bool = True
    on_finish: str | None = None
    progress_interval: float = Field(default=2.0, gt=0)
    log_limit: int = Field(default=1 << 20, ge=0)
    theme: str = "dark"

    @field_validator("rate", mode="before")
    @classmethod
    def _parse_rate(cls, value: Any) -> Any:
        return parse_rate(value) if isinstance(value, str) else value

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
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("chunk_size")
    @classmethod
    def _chunk_positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 or 'auto'")
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
            raise ValueError("scheduler only applies to the dask executor")
        return self

    @property
    def in_flight_window(self) -> int:
        return self.window or self.workers * 4

    def resolved_executor(self, processor_kind: str) -> str:
        if self.executor:
            return self.executor
        return "process" if processor_kind == "python" else "thread"


#: Knobs that may differ on resume (recorded in the manifest's history); everything else is
#: the batch's identity and comes from the stored config.
OPERATIONAL: Final = frozenset(
    {
        "workers",
        "window",
        "rate",
        "timeout",
        "grace",
        "max_failure_rate",
        "min_items",
        "max_cost",
        "memory_limit_mb",
        "max_attempts",
        "backoff",
        "backoff_max",
        "fsync",
        "on_finish",
        "progress_interval",
        "executor",
        "scheduler",
        "theme",
    }
)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float:
    """Parse ``"10"``, ``"10/s"``, ``"600/m"`` or ``"100/h"`` into items per second."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"rate {text!r} is not N, N/s, N/m or N/h")
    return float(match.group(1)) / _PER[match.group(2) or "s"]


def _env_layer(environ: Mapping[str, str]) -> dict[str, str]:
    # Only known names: BATCHTUI_SEQ and friends are set for item commands and are not settings.
    known = BatchConfig.model_fields
    out: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            field = name[len(ENV_PREFIX) :].lower()
            if field in known:
                out[field] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """Read a batchtui.toml: flat keys named like the long flags (dashes or underscores)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("batchtui", data)
    if not isinstance(section, dict):
        raise UserError(f"config file {path}: [batchtui] must be a table")
    return {key.replace("-", "_"): value for key, value in section.items()}


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> BatchConfig:
    """Merge the layers and validate once.

    ``base`` replaces the defaults (a resumed batch's stored config); ``flags`` holds only
    the options the user actually gave (None values are dropped).
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if base:
        layers.append(("stored config", base))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        layers.append((str(path), read_toml(path)))
    elif base is None:
        default = (cwd or Path.cwd()) / CONFIG_FILENAME
        if default.is_file():
            layers.append((str(default), read_toml(default)))
    layers.append(("environment", _env_layer(os.environ if environ is None else environ)))
    layers.append(("flags", {k: v for k, v in (flags or {}).items() if v is not None}))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for label, layer in layers:
        for key, value in layer.items():
            merged[key] = value
            origin[key] = label
    try:
        return BatchConfig.model_validate(merged)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, origin)) from None


def format_validation_error(exc: ValidationError, origin: Mapping[str, str]) -> str:
    """A readable multi-line message naming each bad setting and where it came from."""
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "config"
        where = origin.get(str(err["loc"][0]), "") if err["loc"] else ""
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        suffix = f" (from {where})" if where else ""
        value = err.get("input")
        shown = f" = {value!r}" if err["type"] != "extra_forbidden" and not isinstance(value, dict) else ""
        lines.append(f"  {loc}{shown}: {msg}{suffix}")
    return "\n".join(lines)


def operational_overrides(stored: BatchConfig, new: BatchConfig) -> dict[str, Any]:
    """The operational knobs a resume changed, as {name: new value}."""
    old = stored.model_dump(mode="json")
    cur = new.model_dump(mode="json")
    return {k: cur[k] for k in sorted(OPERATIONAL) if old.get(k) != cur.get(k)}
