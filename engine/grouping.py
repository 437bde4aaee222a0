"""Error groups: the normalized message that groups alike failures, and a group's short id.

Triage works by group (``errors``, ``retry --group``, the dashboard's error panel and its
``R`` key), so a group must hold every failure of one cause and nothing else. A message's
variable parts are folded into placeholders, in this order:

1. the failing item itself, where the message names it (its key; for a path, also its file
   name and its stem): ``<item>``. Only forms distinctive enough not to be an ordinary word of
   other items' messages are folded (see :func:`_distinctive`);
2. URLs (``<url>``), UUIDs and hex ids (``<id>``: 12 hex digits or more, or 8 to 11 with a digit
   and a letter, also after ``_`` as in ``token_5f3a9c1d``), ``0x`` numbers (``<hex>``),
   e-mail addresses (``<email>``);
3. tokens (``<token>``): what follows a name such as ``id``, ``request id``, ``trace_id=`` or
   ``token:`` when it has a digit or mixes cases; and any run of 8 or more letters, digits and
   ``+/_.-`` (base64, request ids, random file names) that looks random
   (:func:`_looks_random`). A constant such as ``ERR_HTTP2_PROTOCOL_ERROR``, ``python3.11``,
   ``x86_64``, ``sha256sum`` or ``ConnectionResetError`` stays;
4. absolute paths (``<path>``), then numbers (``<n>``).

A short random string can pass for a name: of 16 random letters and digits, about 3 in 100
do, and each makes a group of its own (24 characters: under 1 in 100).

Without steps 1 and 3, a command whose last line of stderr carries a random id made one group
per item: 36 failures of one cause, 36 groups to retry one at a time.

The normalization is versioned (:data:`GROUPING_VERSION`, in items.db's ``meta``): a store
grouped by an earlier version is regrouped once, when a batchtui that normalizes differently
opens it for writing (:func:`batchtui.engine.store.schema.migrate`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final, NamedTuple

__all__ = ["GROUPING_VERSION", "GROUP_LIMIT", "Family", "families", "group_id", "normalize_message"]

#: The version of :func:`normalize_message`'s rules; stored in items.db's meta as ``grouping``.
#: Version 1 folded paths, ids, hex and numbers; version 2 adds items, URLs, e-mails, tokens.
GROUPING_VERSION: Final = 2
#: A normalized message is cut to this many characters.
GROUP_LIMIT: Final = 200
#: Item forms longer than this are not looked for (a CSV row or JSON record as a key).
_ITEM_FORM_LIMIT: Final = 512

_TOKEN_CHARS: Final = r"\w+/.-"
#: Before the tokens (whose characters they share): URLs, ids, hex numbers, e-mails.
#: Each with a string without which it cannot match: most messages skip most patterns.
_BEFORE_TOKENS: Final = (
    (r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+", "<url>", "://"),
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "<id>", "-"),
    (r"\b0x[0-9a-fA-F]+\b", "<hex>", "0x"),
    # Hex ids, also after '_' (token_5f3a...): 12 digits or more, or 8 to 11 with a digit and a letter.
    (r"(?<![0-9A-Za-z])[0-9a-fA-F]{12,}(?![0-9A-Za-z])", "<id>", ""),
    (r"(?<![0-9A-Za-z])(?=[a-fA-F]*[0-9])(?=[0-9]*[a-fA-F])[0-9a-fA-F]{8,11}(?![0-9A-Za-z])", "<id>", ""),
    (r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b", "<email>", "@"),
)
#: After the tokens (a path whose parts are random is a token: base64 has slashes).
_AFTER_TOKENS: Final = (
    (r"(?:[A-Za-z]:)?(?:/[^\s/:'\"]+){2,}/?", "<path>", "/"),
    (r"\d+(?:\.\d+)?", "<n>", ""),
)
#: A maximal run of token characters, with base64's padding.
_TOKEN: Final = rf"(?<![{_TOKEN_CHARS}])[{_TOKEN_CHARS}]{{8,}}={{0,2}}"
#: A run named as an id (``request id X``, ``trace_id=X``, ``token: X``): a token when it has
#: a digit or both cases, however plain it looks otherwise.
_NAMED: Final = (
    # (?=...): a quick first-letter check, nine times faster on a long message than without
    r"(?i:((?<![a-z0-9])(?=[ikrtsnhdeuc])(?:id|token|key|trace|request|session|nonce|hash|digest|etag"
    r"|ref|sha|uuid|correlation|txn)(?![a-z0-9])(?:\s*[:=#]\s*|\s+)[\"']?))"
    rf"([{_TOKEN_CHARS}]{{6,}}={{0,2}})(?![{_TOKEN_CHARS}])"
)
#: Letter-digit switches that make a run a token rather than a word.
_TOKEN_SWITCHES: Final = 3
#: Digits between ASCII letters, as in random text; any digit (small patterns: compiled at import).
_INNER_DIGITS: Final = re.compile(r"[A-Za-z][0-9]+[A-Za-z]")
_DIGIT: Final = re.compile(r"[0-9]")

_Rules = tuple[tuple[re.Pattern[str], str, str], ...]
_compiled: tuple[_Rules, re.Pattern[str], re.Pattern[str], _Rules] | None = None


def _compile() -> tuple[_Rules, re.Pattern[str], re.Pattern[str], _Rules]:
    # At the first failure, not at import (every CLI command imports the modules that import
    # this one). Two threads may both compile: the same result, no harm.
    global _compiled
    if _compiled is None:
        before = tuple((re.compile(pattern), repl, needle) for pattern, repl, needle in _BEFORE_TOKENS)
        after = tuple((re.compile(pattern), repl, needle) for pattern, repl, needle in _AFTER_TOKENS)
        _compiled = (before, re.compile(_NAMED), re.compile(_TOKEN), after)
    return _compiled


def _switches(text: str) -> int:
    """How many times ``text`` goes from an ASCII letter straight to a digit or back."""
    count = 0
    previous = 0  # 1: letter, 2: digit, 0: anything else
    for ch in text:
        kind = 1 if ("a" <= ch <= "z" or "A" <= ch <= "Z") else 2 if "0" <= ch <= "9" else 0
        if kind and previous and kind != previous:
            count += 1
        previous = kind
    return count


def _random_case(text: str) -> bool:
    """Whether ``text``'s letters switch case like random base62 rather than like a name: 10 or
    more letters in at least 2 capital and 3 small runs, the small ones under 2.2 letters long
    on average (``fqvSQyrEGtiIm``; not ``ConnectionResetError``, ``getHTTPResponseCode``)."""
    letters = uppers = 0
    small: list[int] = []
    run = 0  # the small letters of the current run
    previous = ""
    for ch in text:
        if "a" <= ch <= "z":
            run += 1
            kind = "a"
        else:
            if run:
                small.append(run)
                run = 0
            kind = "A" if "A" <= ch <= "Z" else ""
            uppers += kind == "A" and previous != "A"
        letters += bool(kind)
        previous = kind
    if run:
        small.append(run)
    return letters >= 10 and uppers >= 2 and len(small) >= 3 and sum(small) < 2.2 * len(small)


def _looks_random(text: str) -> bool:
    """Whether the run ``text`` is a token: letters and digits alternate (:func:`_switches`),
    or the letters switch case like random text (:func:`_random_case`), or 10 characters or
    more mix both cases with digits between letters (``Jujxgzeqc4rqwZmS``). A name such as
    ``Texture2DArray`` or ``Win32Error`` may be taken for one: then two messages that differ only
    there are one group, a smaller harm than one group per item."""
    if (text.islower() or text.isupper()) and not _DIGIT.search(text):
        return False  # a word in one case (most runs): the cheap answer first
    if _switches(text) >= _TOKEN_SWITCHES or _random_case(text):
        return True
    if len(text) < 10 or text.islower() or text.isupper():
        return False
    return _INNER_DIGITS.search(text) is not None


def _token(match: re.Match[str]) -> str:
    run = match.group()
    core = run.rstrip(".")  # a sentence's full stop is not part of the token
    return "<token>" + run[len(core) :] if _looks_random(core) else run


def _named(match: re.Match[str]) -> str:
    name, run = match.group(1, 2)
    core = run.rstrip(".")
    # A word stays ('key Name', 'session CLOSED'); digits or mixed case make an id.
    one_case = core == core.lower() or core == core.upper() or core.istitle()
    plain = core.isdecimal() or (one_case and not any("0" <= ch <= "9" for ch in core))  # numbers: <n>
    return match.group() if plain and not _looks_random(core) else name + "<token>" + run[len(core) :]


@functools.lru_cache(maxsize=4096)
def _generic(text: str) -> str:
    # Cached: a batch that fails, fails with the same few messages over and over.
    before, named, token, after = _compile()
    for pattern, repl, needle in before:
        if needle in text:
            text = pattern.sub(repl, text)
    text = named.sub(_named, text)
    text = token.sub(_token, text)
    for pattern, repl, needle in after:
        if needle in text:
            text = pattern.sub(repl, text)
    return text


def _distinctive(form: str) -> bool:
    """Whether ``form`` is unlikely to be an ordinary word of some other item's message: at
    least 4 characters with at least 3 letters or digits, and either 8 or more characters or
    something besides lowercase letters (``Paris``, ``a.txt``, ``item-7``; not ``error``, nor a number)."""
    if not 4 <= len(form) <= _ITEM_FORM_LIMIT or form.isdecimal() or sum(ch.isalnum() for ch in form) < 3:
        return False  # a number stays a number (<n>)
    return len(form) >= 8 or not form.isalpha() or not form.islower()


def _item_forms(key: str) -> list[str]:
    """The ways a message may name the item ``key``, longest first: the key itself and, for a
    path (not a URL), its file name and its stem."""
    forms = {key}
    if "/" in key and "://" not in key:
        name = key.rstrip("/").rsplit("/", 1)[-1]
        forms.add(name)
        stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
        forms.add(stem)
    return sorted((f for f in forms if _distinctive(f)), key=len, reverse=True)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _fold_item(message: str, key: str) -> str:
    """``message`` with each whole-word occurrence of a form of ``key`` made ``<item>``."""
    for form in _item_forms(key):
        start = message.find(form)
        if start < 0:
            continue
        out: list[str] = []
        done = 0
        while start >= 0:
            end = start + len(form)
            before = message[start - 1] if start else ""
            after = message[end] if end < len(message) else ""
            # A whole word: not the middle of a longer name (item 'a.txt' in 'data.txt').
            inside = (before and _is_word(before) and _is_word(form[0])) or (
                after and _is_word(after) and _is_word(form[-1])
            )
            if inside:
                start = message.find(form, start + 1)
                continue
            out += (message[done:start], "<item>")
            done = end
            start = message.find(form, end)
        out.append(message[done:])
        message = "".join(out)
    return message


def normalize_message(message: str, item: str | None = None) -> str:
    """``message`` with its variable parts folded (the module docstring says which), cut to
    :data:`GROUP_LIMIT` characters. ``item`` is the failing item's key: where the message names
    the item, the name is folded too, so that 'cannot parse a17.json' and 'cannot parse
    b2.json' are one group."""
    if item:
        message = _fold_item(message, item)
    return _generic(message)[:GROUP_LIMIT]


def group_id(error_type: str, normalized_message: str) -> str:
    """The short stable id of an error group: 8 lowercase hex digits of a blake2b of the type
    and the normalized message (:func:`normalize_message`; items.db's ``error_group`` column
    holds it). The same pair gives the same id in every view, every run and every version; a
    store regrouped by a newer :data:`GROUPING_VERSION` may have new pairs, so new ids."""
    import hashlib  # only error views need it (the CLI imports this module for every command)

    digest = hashlib.blake2b(f"{error_type}\x00{normalized_message}".encode("utf-8", "surrogatepass"), digest_size=4)
    return digest.hexdigest()


class Family(NamedTuple):
    """Error groups of one type whose normalized messages differ in one word only: what the
    rules above did not fold (a word that is not a token to them), shown so an operator can act
    on them together. ``members`` index the groups given to :func:`families`; ``pattern`` is
    the message with ``*`` for that word; ``match`` the longest stretch of the words around it
    that the raw messages hold as they are (for ``--match``), or None."""

    error_type: str
    pattern: str
    members: list[int]
    match: str | None


#: Groups looked at by :func:`families` (the biggest: enough to find what splits, and bounded).
FAMILY_SCAN: Final = 2000


def families(groups: Sequence[tuple[str, str, int]], least: int = 3) -> list[Family]:
    """Of ``(error type, normalized message, count)`` (biggest first, as the store lists them),
    the families of at least ``least`` groups that differ in one word only, the biggest (by
    items) first; a group is in one family at most."""
    buckets: dict[tuple[str, int, int, str, str], list[int]] = {}
    for index, (error_type, message, _count) in enumerate(groups[:FAMILY_SCAN]):
        words = message.split(" ")
        if len(words) < 2:
            continue
        for pos in range(len(words)):
            key = (error_type, len(words), pos, " ".join(words[:pos]), " ".join(words[pos + 1 :]))
            buckets.setdefault(key, []).append(index)
    found = sorted(
        ((key, members) for key, members in buckets.items() if len(members) >= least),
        key=lambda item: (-sum(groups[i][2] for i in item[1]), -len(item[1]), item[1][0]),
    )
    taken: set[int] = set()
    out: list[Family] = []
    for (error_type, _n, _pos, before, after), members in found:
        rest = [i for i in members if i not in taken]
        if len(rest) < least:
            continue
        taken.update(rest)
        pattern = " ".join(part for part in (before, "*", after) if part)
        out.append(Family(error_type, pattern, rest, _plain_stretch([*before.split(" "), "", *after.split(" ")])))
    return out


def _plain_stretch(words: list[str]) -> str | None:
    """The longest run of ``words`` (an empty word breaks a run) with no placeholder in it,
    joined; None when under 6 characters."""
    best = ""
    run: list[str] = []
    for word in [*words, ""]:
        if word and "<" not in word:
            run.append(word)
            continue
        text = " ".join(run)
        if len(text) > len(best):
            best = text
        run = []
    return best if len(best) >= 6 else None
