"""The dry run (``--dry-run``): every item read and validated, none processed.

Preflight (engine/preflight.py) answers "will this batch start?" from the heads of its
inputs; the dry run reads the whole source, as the enqueue would, and reports per item what
would fail: a record that cannot be read, a template field the record lacks, and for files a
size or extension outside the limits given, an empty file, or content that is not what its
suffix names. Nothing is written: duplicates are counted with a set of short key hashes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Final

from .models import Unreadable
from .processors import ProcessorSpec
from .shell.item import Item, out_path
from .shell.template import CommandTemplate, MissingField
from .sources import SourceSpec, iter_items

#: Leading bytes of common formats, checked when a file's suffix names one of them.
MAGIC: Final[dict[str, tuple[bytes, ...]]] = {
    ".pdf": (b"%PDF",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".gif": (b"GIF87a", b"GIF89a"),
    ".zip": (b"PK\x03\x04", b"PK\x05\x06"),
    ".docx": (b"PK\x03\x04",),
    ".xlsx": (b"PK\x03\x04",),
    ".pptx": (b"PK\x03\x04",),
    ".odt": (b"PK\x03\x04",),
    ".epub": (b"PK\x03\x04",),
    ".jar": (b"PK\x03\x04",),
    ".gz": (b"\x1f\x8b",),
    ".tgz": (b"\x1f\x8b",),
    ".bz2": (b"BZh",),
    ".xz": (b"\xfd7zXZ\x00",),
    ".zst": (b"\x28\xb5\x2f\xfd",),
    ".parquet": (b"PAR1",),
    ".sqlite": (b"SQLite format 3\x00",),
    ".db": (b"SQLite format 3\x00",),
    ".wav": (b"RIFF",),
    ".webp": (b"RIFF",),
    ".mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
    ".flac": (b"fLaC",),
    ".ogg": (b"OggS",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
    ".bmp": (b"BM",),
    ".7z": (b"7z\xbc\xaf\x27\x1c",),
    ".rar": (b"Rar!\x1a\x07",),
}


@dataclass(frozen=True)
class ItemProblem:
    origin: str
    key: str
    problem: str


@dataclass(frozen=True)
class ShownRun:
    """What one item would run: for ``--cmd`` the argv the item's process gets (``/bin/sh -c``
    and the rendered command line, every value quoted), for ``--call`` the call."""

    seq: int
    key: str
    argv: tuple[str, ...] = ()
    call: str = ""


@dataclass
class DryRun:
    """What a dry run found: item count, duplicates, problems per item, and what the first
    items would run."""

    items: int = 0
    duplicates: int = 0
    problems: list[ItemProblem] = field(default_factory=list)
    problem_count: int = 0
    runs: list[ShownRun] = field(default_factory=list)
    #: What the source could not read (each also a problem) and what a walk left out by rule.
    unreadable: Unreadable = field(default_factory=Unreadable)


def dry_run(
    source: SourceSpec,
    processor: ProcessorSpec,
    *,
    max_size_mb: float | None = None,
    extensions: tuple[str, ...] = (),
    keep: int = 1000,
    show: int = 0,
    batch_dir: str = "",
) -> DryRun:
    """Validate every item without processing it. Keys are deduplicated with a set of hashes.

    ``show``: what the first that many items would run (:class:`ShownRun`; their seqs are the
    ones they get, ``{out}`` under ``batch_dir``, the batch to be made)."""
    template = CommandTemplate(processor.command) if processor.kind == "shell" and processor.command else None
    needed = template.fields if template is not None else set()
    kinds = frozenset(e.kind for e in source.entries)
    seen: set[bytes] = set()
    report = DryRun()
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}

    def problem(origin: str, key: str, text: str) -> None:
        report.problem_count += 1
        if len(report.problems) < keep:
            report.problems.append(ItemProblem(origin, key, text))

    unreadable = report.unreadable
    for item in iter_items(source, unreadable=unreadable):
        digest = hashlib.blake2b(item.key.encode(errors="surrogatepass"), digest_size=12).digest()
        if digest in seen:
            report.duplicates += 1
            continue
        seen.add(digest)
        report.items += 1
        where = item.origin or item.key
        if len(report.runs) < show and item.invalid is None:
            shown = _shown_run(processor, template, item.key, item.data, report.items - 1, batch_dir, kinds)
            if shown is not None:
                report.runs.append(shown)
        if item.invalid:
            problem(where, item.key, item.invalid)
            continue
        if isinstance(item.data, dict):
            missing = sorted(f for f in needed if f not in item.data)
            if missing:
                problem(where, item.key, f"no field {', '.join(missing)} for the template")
            continue
        if needed and not isinstance(item.data, dict):
            problem(where, item.key, f"template fields {', '.join(sorted(needed))} need CSV/JSONL records")
        if any(e.kind in ("dir", "files") for e in source.entries) and os.path.isabs(str(item.data)):
            for text in _file_problems(str(item.data), max_size_mb, exts):
                problem(where, item.key, text)
    # What the source could not read would be left out of the batch: a problem of the run.
    for example in unreadable.examples:
        problem(example.path, example.path, f"could not be read ({example.reason}): left out of the batch")
    report.problem_count += unreadable.count - len(unreadable.examples)
    return report


def _shown_run(
    processor: ProcessorSpec,
    template: CommandTemplate | None,
    key: str,
    data: object,
    seq: int,
    batch_dir: str,
    kinds: frozenset[str],
) -> ShownRun | None:
    """What item ``seq`` would run (None when it cannot: a field it lacks, a NUL byte, which are
    its problems)."""
    from .enqueue import _kind_of

    if template is None:
        call = f"{processor.call}(item)  # item.seq={seq}, item.key={key!r}, item.data={data!r}"
        return ShownRun(seq, key, call=call)
    item = Item(seq=seq, key=key, data=data, attempt=1, batch_dir=batch_dir, kind=_kind_of(data, kinds))
    try:
        command = template.render(item, out_path(item) if template.uses_out else None)
    except (MissingField, ValueError):
        return None
    return ShownRun(seq, key, argv=("/bin/sh", "-c", command))


def _file_problems(path: str, max_size_mb: float | None, exts: set[str]) -> list[str]:
    out: list[str] = []
    try:
        st = os.stat(path)
    except OSError as exc:
        return [f"cannot stat: {exc.strerror}"]
    if not os.access(path, os.R_OK):
        return ["not readable"]
    suffix = os.path.splitext(path)[1].lower()
    if exts and suffix not in exts:
        out.append(f"extension {suffix or '(none)'} not in {', '.join(sorted(exts))}")
    if max_size_mb is not None and st.st_size > max_size_mb * 1048576:
        out.append(f"{st.st_size / 1048576:.1f} MB over the {max_size_mb:g} MB limit")
    if st.st_size == 0:
        out.append("empty file")
        return out
    magic = MAGIC.get(suffix)
    if magic:
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            return [*out, f"cannot read: {exc.strerror}"]
        if not any(head.startswith(m) for m in magic):
            out.append(f"content is not {suffix[1:].upper()} (unexpected leading bytes {head[:8]!r})")
    return out
