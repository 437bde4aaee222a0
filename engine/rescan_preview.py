"""What ``resume --rescan`` would find now, changing nothing (the resume dialog's preview)."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

from .batchdir import BatchDir, now_iso
from .enqueue import _rows
from .errors import UserError
from .fmt import clean
from .growing import _check_rereadable, batch_sources, source_pipes
from .store import ItemStore, LineBlock


@dataclass(frozen=True)
class RescanPreview:
    """What ``resume --rescan`` would find now, changing nothing: keys not in the batch, and
    items whose key is not in the sources any more."""

    new: int
    missing: int


def preview_rescan(bdir: BatchDir) -> RescanPreview:
    """Read every source of ``bdir`` and compare its keys with items.db, read-only (a view may
    call it while another process holds the batch). The keys are those of the creation
    (:func:`.enqueue._rows`); an item is known by its seq in a bitmap, a new key by a short hash, so a
    1M-item batch costs a few megabytes. UserError as :func:`.growing.rescan_batch`."""
    manifest = bdir.read_manifest()
    specs = batch_sources(manifest)
    _check_rereadable(specs, "cannot rescan")
    pipes = source_pipes(manifest)
    if pipes:
        # Read here, a pipe would give its lines to the preview, and the rescan find none.
        raise UserError(
            f"no preview: {clean(pipes[0])} is a named pipe, which gives its lines once (to the rescan itself)"
        )
    store = ItemStore.open_readonly(bdir.items_db)
    try:
        total = store.counts().total
        found = bytearray(store.max_seq() // 8 + 1)
        new: set[bytes] = set()
        at = now_iso()
        rows = itertools.chain.from_iterable(_rows(spec, None, at) for spec in specs)
        keys: list[str] = []

        def look(keys: list[str]) -> None:
            marks = ",".join("?" * len(keys))
            known = dict(store.conn.execute(f"SELECT key, seq FROM items WHERE key IN ({marks})", keys).fetchall())
            for key in keys:
                seq = known.get(key)
                if seq is None:
                    new.add(hashlib.blake2b(key.encode(errors="surrogatepass"), digest_size=12).digest())
                else:
                    found[seq >> 3] |= 1 << (seq & 7)

        for row in rows:
            keys.extend(row.keys if isinstance(row, LineBlock) else [row[0]])
            while len(keys) >= 500:
                look(keys[:500])
                del keys[:500]
        if keys:
            look(keys)
    finally:
        store.close()
    seen = sum(bin(b).count("1") for b in found)
    return RescanPreview(new=len(new), missing=total - seen)


__all__ = ["RescanPreview", "preview_rescan"]
