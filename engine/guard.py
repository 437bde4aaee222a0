"""Is the batch's folder still where the engine opened it?

An engine writes its live files by path, but its store and results log through descriptors
opened at the start. Moved, renamed or deleted under a running engine, the folder takes those
files with it (they keep working) while every write by path fails: the run must halt and say
where its work went, not die of the first write. :class:`FolderGuard` notices, with one stat.
"""

from __future__ import annotations

from pathlib import Path

from .files import identity

__all__ = ["FolderGuard"]


class FolderGuard:
    """The (device, inode) of a batch folder when the engine took it, and the halt reason once
    it is found gone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity = identity(path)
        self.reason: str | None = None

    def moved(self) -> str | None:
        """None while the folder is where it was; else (now and from then on) why the run halts."""
        if self.reason is None and self._identity is not None and identity(self.path) != self._identity:
            self.reason = (
                f"the batch folder {self.path} was moved or deleted while this engine ran: it stopped"
                " (what it ran is in the files that moved with the folder: `batchtui resume <its folder now>`"
                " goes on from there)"
            )
        return self.reason
