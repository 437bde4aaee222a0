"""Limits per key: ``--limit-by TEMPLATE RATE[,CONCURRENCY]``, and how a retry-after slows a key.

Each item has a key, its template rendered for it (``'{host}'``: the host of a line's URL), and
each key its own token bucket (``RATE``; :data:`BURST_S` of it at once) and cap on the items in flight
(``CONCURRENCY``), on top of the global ``--rate`` and ``--workers``. The dispatcher asks
:meth:`KeyLimits.blocked` before it hands an item out and sets aside an item whose key is over
its limit, so the other keys' items go on (no head-of-line blocking).

A failure that carries a retry-after (:attr:`.errors.ErrorInfo.retry_after`: a 429) slows its
key down (AIMD): the key takes nothing more until the retry-after is over, and its rate is
halved (at least :data:`MIN_FRACTION` of the configured one); each success then adds
:data:`INCREASE` of the configured rate back, up to it. Every method takes the time it runs
at, so a test drives it with a fake clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from .errors import UserError
from .models import KeyLimit
from .shell.item import Item, value_text
from .shell.template import BUILTINS, _value

#: A key's rate after a retry-after: halved, never below this share of the configured rate.
DECREASE: Final = 0.5
MIN_FRACTION: Final = 1 / 64
#: What each success adds back to a slowed key's rate: this share of the configured rate.
INCREASE: Final = 0.05
#: A key's bucket holds this long's worth of its rate, at least one item: no burst at the rates
#: that protect a server (up to 50/s), and a fast key is not held to one item a turn of the loop.
BURST_S: Final = 0.02
#: The most items in flight for one key (as --workers).
MAX_CONCURRENCY: Final = 4096
#: Keys with nothing in flight, nothing waiting and no slowdown are forgotten past this many
#: (a batch of a million hosts keeps no million buckets); a forgotten key starts afresh.
MAX_KEYS: Final = 10_000
#: The keys live_progress.json shows (the busiest), and the length of a key shown there.
LIVE_KEYS: Final = 8
LIVE_KEY_CHARS: Final = 200
#: A longer key (a template of a long value) is kept as its start and a hash of it.
MAX_KEY_CHARS: Final = 512
#: Placeholders a key template may name besides a record field: the --cmd ones but {out}
#: (a folder of the batch, one per item), and {host}.
KEY_PLACEHOLDERS: Final = (BUILTINS - {"out"}) | {"host"}
#: Source kinds whose items are lines (a URL a line): the only ones with a {host}.
LINE_KINDS: Final = frozenset({"lines", "stdin"})
RECORD_KINDS: Final = frozenset({"csv", "jsonl"})

_SPEC = re.compile(r"^(?P<rate>[^,]+?)\s*(?:,\s*(?P<conc>[^,]*))?$")
_FIELD = re.compile(r"[^\W\d][\w-]*")


def url_host(text: str) -> str:
    """``{host}`` of a line: its URL's host name, lower case, without user, password or port;
    "" for a line that is not a URL with a host (such lines share one key)."""
    try:
        host = urlsplit(text.strip()).hostname
    except ValueError:  # a malformed IPv6 literal, a bad port
        return ""
    return host or ""


class KeyTemplate:
    """A parsed ``--limit-by`` template; :meth:`render` gives an item's key (plain text: a key
    is never a command). ``{{`` and ``}}`` are literal braces, as in ``--cmd``."""

    __slots__ = ("_parts", "names", "template")

    def __init__(self, template: str) -> None:
        if not template.strip():
            raise ValueError("the key template is empty (e.g. '{host}')")
        self.template = template
        parts: list[tuple[bool, str]] = []  # (is a placeholder, text or name)
        pieces = re.split(r"(\{\{|\}\}|\{[^{}]*\}|[{}])", template)
        for piece in pieces:
            if not piece:
                continue
            if piece in ("{{", "}}"):
                parts.append((False, piece[0]))
            elif piece in ("{", "}"):
                raise ValueError(
                    f"unbalanced {piece!r} in the key template {template!r} (write {piece * 2} for a literal brace)"
                )
            elif piece.startswith("{"):
                name = piece[1:-1]
                if name == "out":
                    raise ValueError("{out} (a folder of the batch, one per item) cannot be a key")
                if name not in KEY_PLACEHOLDERS and not _FIELD.fullmatch(name):
                    raise ValueError(
                        f"bad placeholder {piece} in the key template {template!r}: use {{host}}, {{}}, "
                        "{path}, {name}, {stem}, {suffix}, {parent}, {seq}, {key} or a record field name"
                    )
                parts.append((True, name))
            else:
                parts.append((False, piece))
        self._parts = tuple(parts)
        self.names = frozenset(text for is_slot, text in parts if is_slot)

    @property
    def fields(self) -> frozenset[str]:
        """The record fields the template names."""
        return frozenset(name for name in self.names if name not in KEY_PLACEHOLDERS)

    def render(self, item: Item) -> str:
        """``item``'s key. A record field the item lacks renders as "" (such items share a key)."""
        out: list[str] = []
        for is_slot, text in self._parts:
            if not is_slot:
                out.append(text)
            elif text == "host" and not isinstance(item.data, dict):  # a record's own host field stands in
                out.append(url_host(item.value))
            else:
                try:
                    out.append(value_text(_value(item, text, None)))
                except KeyError:  # MissingField
                    out.append("")
        return "".join(out)


@dataclass(frozen=True, slots=True)
class LimitBy:
    """A parsed ``--limit-by``: the key template, each key's rate (items a second) and cap on
    its items in flight (None: no cap but --workers)."""

    template: KeyTemplate
    rate: float
    concurrency: int | None


def parse_limit_by(text: str) -> LimitBy:
    """``"TEMPLATE RATE[,CONCURRENCY]"`` (the template is all before the last blank), e.g.
    ``"{host} 5/s,4"``; ValueError saying what is wrong."""
    from .config import check_number, parse_rate  # config imports this module

    parts = text.strip().rsplit(None, 1)
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not TEMPLATE RATE[,CONCURRENCY], e.g. '{{host}} 5/s,4'")
    template, spec = parts
    match = _SPEC.match(spec)
    if not match:
        raise ValueError(f"{spec!r} is not RATE[,CONCURRENCY], e.g. 5/s,4")
    rate = parse_rate(match.group("rate"))
    try:
        check_number("rate", rate)
    except ValueError as exc:
        raise ValueError(f"rate {match.group('rate')!r}: {exc}") from None
    concurrency: int | None = None
    conc = match.group("conc")
    if conc is not None:
        if not (conc.strip().isascii() and conc.strip().isdigit()) or not 1 <= int(conc) <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency {conc!r} is not a whole number from 1 to {MAX_CONCURRENCY}")
        concurrency = int(conc)
    return LimitBy(KeyTemplate(template), rate, concurrency)


def limit_fields(limit_by: str | None, kinds: Iterable[str]) -> frozenset[str]:
    """The record fields the key template takes from CSV/JSONL records ({host} among them: a
    record's own host field); none when the sources are not all records."""
    if not limit_by or not set(kinds) <= RECORD_KINDS:
        return frozenset()
    template = parse_limit_by(limit_by).template
    return template.fields | (template.names & {"host"})


def check_limit_source(limit_by: str | None, kinds: Iterable[str], available: Iterable[str] | None = None) -> None:
    """UserError when the key template names what this batch's items do not have: ``{host}``
    needs line sources (URLs) or records with a host field, a record field CSV or JSONL
    sources; ``available``, the sources' field names where known (CSV headers, the first
    JSONL records), must hold every field named (a missing one would give every item the
    empty key: one shared limit, silently)."""
    if not limit_by:
        return
    template = parse_limit_by(limit_by).template
    kinds = set(kinds)
    if available is not None and kinds <= RECORD_KINDS:
        missing = sorted(limit_fields(limit_by, kinds) - set(available))
        if missing:
            raise UserError(
                f"--limit-by {template.template!r}: the sources have no field {', '.join(missing)} "
                f"(they have: {', '.join(sorted(available)) or 'nothing'})"
            )
    # {host} of CSV/JSONL records is their own "host" field (a common column name), as a
    # record's "name" or "path" field stands in for the built-in of that name in --cmd.
    if "host" in template.names and not (kinds <= LINE_KINDS or kinds <= RECORD_KINDS):
        raise UserError(
            f"--limit-by {template.template!r}: {{host}} is the host of a URL line (or a record's host "
            f"field), and this batch reads {', '.join(sorted(kinds - LINE_KINDS - RECORD_KINDS))} sources "
            "(give a line file or stdin, or use {path}, {parent} or a record field)"
        )
    if template.fields and not kinds <= RECORD_KINDS:
        raise UserError(
            f"--limit-by {template.template!r}: record fields ({', '.join(sorted(template.fields))}) need CSV "
            f"or JSONL sources, and this batch reads {', '.join(sorted(kinds - RECORD_KINDS))}"
        )


@dataclass(slots=True)
class KeyState:
    """One key's bucket, slowdown and counts."""

    rate: float  # now (AIMD), at most the configured one
    tokens: float
    stamp: float
    not_before: float = 0.0  # a retry-after: nothing of this key goes out before it
    in_flight: int = 0
    backoffs: int = 0  # retry-afters received
    done: int = 0  # attempts ended without one

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(max(1.0, self.rate * BURST_S), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now


class KeyLimits:
    """The per-key limits of a run (see the module docstring)."""

    def __init__(self, limit: LimitBy) -> None:
        self.limit = limit
        self.keys: dict[str, KeyState] = {}
        self._out: dict[int, str] = {}  # seq -> key of items handed out
        self._slowed: set[int] = set()  # handed-out seqs whose attempt got a retry-after
        self._max_keys = MAX_KEYS  # raised when few keys could be forgotten (amortized O(1))

    def key_of(self, item: Item) -> str:
        key = self.limit.template.render(item)
        if len(key) > MAX_KEY_CHARS:  # a key from a long value: kept short, still one per value
            import hashlib

            digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
            key = f"{key[:LIVE_KEY_CHARS]}…{digest}"
        return key

    def _state(self, key: str, now: float) -> KeyState:
        state = self.keys.get(key)
        if state is None:
            if len(self.keys) >= self._max_keys:
                self._forget(now)
                # Keys still busy (slow rates, many in flight) are kept: look again only once
                # as many more came, so a batch of a million one-item keys is not quadratic.
                self._max_keys = max(MAX_KEYS, 2 * len(self.keys))
            rate = self.limit.rate
            state = self.keys[key] = KeyState(rate, max(1.0, rate * BURST_S), now)
        return state

    def _forget(self, now: float) -> None:
        configured = self.limit.rate
        for key, s in list(self.keys.items()):
            s.refill(now)
            if (
                not s.in_flight
                and s.rate >= configured
                and s.not_before <= now
                and s.tokens >= max(1.0, s.rate * BURST_S)
            ):
                del self.keys[key]

    def blocked(self, key: str, now: float) -> float | None:
        """None when ``key`` may take one more item now; else the seconds until it may
        (``math.inf``: its items in flight are at the cap, one must end first)."""
        state = self.keys.get(key)
        if state is None:
            return None  # a key not seen (or forgotten): a full bucket, nothing in flight
        cap = self.limit.concurrency
        if cap is not None and state.in_flight >= cap:
            return math.inf
        if state.not_before > now:
            return state.not_before - now
        state.refill(now)
        if state.tokens >= 1.0:
            return None
        return (1.0 - state.tokens) / state.rate

    def acquire(self, seq: int, key: str, now: float) -> None:
        """``seq`` goes out under ``key`` (which :meth:`blocked` said may take it)."""
        state = self._state(key, now)
        state.refill(now)
        state.tokens -= 1.0
        state.in_flight += 1
        self._out[seq] = key

    def settle(self, inflight: Container[int]) -> None:
        """Items no longer in flight (ended, taken back) leave their key's count; each that
        ended without a retry-after adds back to a slowed key's rate."""
        out = self._out
        gone = [seq for seq in out if seq not in inflight]
        configured = self.limit.rate
        for seq in gone:
            state = self.keys.get(out.pop(seq))
            slowed = seq in self._slowed
            self._slowed.discard(seq)
            if state is None:
                continue
            state.in_flight = max(0, state.in_flight - 1)
            if not slowed:
                state.done += 1
                if state.rate < configured:
                    state.rate = min(configured, state.rate + INCREASE * configured)

    def retry_after(self, item: Item, seconds: float, now: float) -> None:
        """``item``'s attempt was answered with a retry-after: its key waits that long, and its
        rate is halved."""
        key = self._out.get(item.seq)
        if key is None:
            key = self.key_of(item)
        else:
            self._slowed.add(item.seq)
        state = self._state(key, now)
        state.refill(now)
        state.backoffs += 1
        state.rate = max(self.limit.rate * MIN_FRACTION, state.rate * DECREASE)
        state.not_before = max(state.not_before, now + seconds)
        # One item may go once the wait is over, the next at the lowered rate: no tokens pile
        # up while the key waits.
        state.tokens = 1.0
        state.stamp = max(state.stamp, state.not_before)

    def view(self, waiting: Mapping[str, int], now: float) -> list[KeyLimit]:
        """The busiest keys (waiting, then in flight, then slowed down) for live_progress.json."""
        names = set(waiting) | {k for k, s in self.keys.items() if s.in_flight or s.backoffs}
        rows = []
        for key in names:
            s = self.keys.get(key)
            rows.append(
                KeyLimit(
                    key=key[:LIVE_KEY_CHARS],
                    rate=round(s.rate if s else self.limit.rate, 4),
                    in_flight=s.in_flight if s else 0,
                    waiting=waiting.get(key, 0),
                    backoffs=s.backoffs if s else 0,
                    done=s.done if s else 0,
                    cooldown_s=round(max(0.0, s.not_before - now), 2) if s else 0.0,
                )
            )
        rows.sort(key=lambda r: (-r.waiting, -r.in_flight, -r.backoffs, r.key))
        return rows[:LIVE_KEYS]


def _rate_text(rate: float) -> str:
    return f"{rate:.3g}/s" if rate >= 0.1 else f"{rate * 60:.3g}/m"


def key_limit_cells(key: KeyLimit) -> tuple[str, str, str, str, str]:
    """One key as the dashboard's limits panel shows it: key, rate now (or, while a retry-after
    holds the key, how long it still waits), in flight, waiting, retry-afters got."""
    rate = f"held {key.cooldown_s:.0f}s" if key.cooldown_s >= 0.5 else _rate_text(key.rate)
    return key.key, rate, str(key.in_flight), str(key.waiting), str(key.backoffs)


def limit_lines(limit_by: str | None, keys: Iterable[KeyLimit]) -> list[str]:
    """``show``'s lines on ``--limit-by``: the setting, then the busiest keys the engine last
    wrote (rate now, in flight, waiting, retry-afters). Keys are item text: the caller cleans them."""
    if not limit_by:
        return []
    lines = [f"{limit_by} (a rate and an in-flight cap per key)"]
    for key in keys:
        name, _, run, wait, backoffs = key_limit_cells(key)
        rate = _rate_text(key.rate) + (f", held {key.cooldown_s:.0f}s more" if key.cooldown_s >= 0.5 else "")
        lines.append(f"{name or '(no key)'}: {rate}, {run} in flight, {wait} waiting, retry-afters {backoffs}")
    return lines
