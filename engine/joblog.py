"""GNU parallel's ``--joblog`` format, for ``batchtui export --format joblog``: scripts written
for parallel's job log keep working on a batch.

The columns and number formats are parallel's (read from a real ``parallel --joblog`` file):
a header line, then one tab-separated line per job::

    Seq  Host  Starttime       JobRuntime  Send  Receive  Exitval  Signal  Command
    1    :     1796192520.785       0.003  0     0        0        0       sh -c "exit 0"

- ``Seq`` is parallel's 1-based job number: the item's seq + 1 (the input's line number for a
  line source); ``Host`` is ``:`` (this machine);
- ``Starttime`` the epoch seconds of the item's last attempt's start (``%.3f``), ``JobRuntime``
  its duration (``%10.3f``);
- ``Send`` 0 (nothing is transferred), ``Receive`` the bytes of stdout the last attempt logged
  (at most ``--log-limit``: batchtui keeps the tail);
- ``Exitval`` and ``Signal`` as parallel writes them: a command's exit code and 0; a command
  killed by signal N: 0 and N; a timeout: -1 and 15 (parallel's ``--timeout`` kill); any
  other failure (a Python exception, a result too large): 1 and 0;
- ``Command`` what ran: the shell command with the item's values quoted (as the engine renders
  it), or the callable and the item's key. A tab, newline or carriage return in it is written
  ``\\t``, ``\\n``, ``\\r``, so each job stays one line.

Only items that ran to an outcome (complete or failed) are jobs; pending and skipped ones are
not, as parallel's log holds only jobs that ran.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Final

from .batchdir import parse_iso
from .logs import log_path
from .processors import ProcessorSpec
from .shell.item import Item, out_path
from .shell.template import CommandTemplate, MissingField
from .store.queries import ItemRow

HEADER: Final = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
#: The statuses whose items are jobs of the log.
RAN: Final = frozenset({"complete", "failed"})
_EXIT = re.compile(r"exit (-?\d+)")
_SIGNAL = re.compile(r"signal (\d+)")
_ESCAPES: Final = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def exit_and_signal(status: str, error_type: str | None) -> tuple[int, int]:
    """(Exitval, Signal) of an item as parallel would log its job."""
    if status == "complete":
        return 0, 0
    text = error_type or ""
    if match := _EXIT.fullmatch(text):
        return int(match.group(1)), 0
    if match := _SIGNAL.fullmatch(text):
        return 0, int(match.group(1))
    if text == "timeout":
        return -1, 15
    return 1, 0


class Joblog:
    """Formats a batch's items as parallel's job log lines (see the module docstring)."""

    def __init__(self, processor: ProcessorSpec, batch_dir: str | os.PathLike[str]) -> None:
        self.processor = processor
        self.batch_dir = str(batch_dir)
        self._template = CommandTemplate(processor.command) if processor.kind == "shell" and processor.command else None

    def command(self, row: ItemRow) -> str:
        """What item ``row`` ran, on one line."""
        if self._template is None:
            what = self.processor.call if self.processor.kind == "python" else self.processor.kind
            return f"{what} {row.key}".translate(_ESCAPES)
        item = Item(
            seq=row.seq, key=row.key, data=row.data, attempt=row.attempts, batch_dir=self.batch_dir, kind=row.kind
        )
        try:
            text = self._template.render(item, out_path(item) if self._template.uses_out else None)
        except (MissingField, ValueError):
            text = self._template.template  # the item could not be rendered (it failed for that)
        return text.translate(_ESCAPES)

    def received(self, row: ItemRow) -> int:
        try:
            return os.stat(log_path(self.batch_dir, row.seq, max(1, row.attempts), "out")).st_size
        except OSError:
            return 0

    def line(self, row: ItemRow) -> str | None:
        """The job line of ``row``; None for an item that is no job (it did not run to an end)."""
        if row.status not in RAN:
            return None
        try:
            start = parse_iso(row.started_at) if row.started_at else 0.0
        except ValueError:
            start = 0.0
        exitval, signal = exit_and_signal(row.status, row.error_type)
        return "\t".join(
            (
                str(row.seq + 1),
                ":",
                f"{start:.3f}",
                f"{row.duration_s or 0.0:10.3f}",
                "0",
                str(self.received(row)),
                str(exitval),
                str(signal),
                self.command(row),
            )
        )

    def lines(self, rows: Iterable[ItemRow]) -> Iterator[str]:
        """The header, then a line for each row that is a job."""
        yield HEADER
        for row in rows:
            line = self.line(row)
            if line is not None:
                yield line


__all__ = ["HEADER", "Joblog", "exit_and_signal"]
