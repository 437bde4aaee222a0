"""Dispatch that waits for memory (``--memory-limit-mb``): the runner's check before it hands
out work, which takes back what is queued while the engine and its items are over the limit,
and says so when the engine alone, no item running, is over it (no item ending brings it under).
"""

from __future__ import annotations

from .batchdir import BatchDir, resume_command
from .fmt import shell_line
from .runstate import RunState


def memory_alone_text(batch: BatchDir, used: float, own: float, limit: float) -> str:
    """What the engine says when it alone, no item running, uses more than --memory-limit-mb:
    dispatch would wait for ever, as no item ending brings it under."""
    higher = max(128, -(-int(used * 1.5) // 64) * 64)  # half as much again, in 64 MB steps
    stop = shell_line("batchtui", "stop", batch.batch_id)
    return (
        f"--memory-limit-mb {limit:g} is under what the engine alone uses with no item running"
        f" ({used:.0f} MB: {own:.0f} MB itself, {used - own:.0f} MB its child processes): no item can start."
        f" Stop it (`{stop}`) and resume it with a higher limit: `{resume_command(batch)} --memory-limit-mb {higher}`"
    )


class MemoryHold(RunState):
    """The runner's memory check (a part of :class:`~.runner.BatchRunner`)."""

    def _memory_ok(self) -> bool:
        limit = self.config.memory_limit_mb
        if limit is None:
            return True
        mem = self.memory.sample()
        used = mem.rss_mb + mem.children_rss_mb
        over = used > limit
        if over and not self._inflight and not self._mem_alone:
            # The sample may be up to a second old, from before the last items' processes ended:
            # look again before saying the engine alone is over (it said so of items just ended).
            mem = self.memory.sample(force=True)
            used = mem.rss_mb + mem.children_rss_mb
            over = used > limit
        if over and not self._mem_waiting:
            held = self.executor.cancel_all() if self.executor is not None else []
            self._return_unstarted(held)
            self.memory_hold = f"memory {used:.0f} MB over --memory-limit-mb {limit:g}: dispatch waits"
            self._warn(self.memory_hold + (f" ({len(held)} queued items back to pending)" if held else ""))
        if over and not self._inflight:
            # No item runs: the engine alone (with its idle workers) is over the limit, and no
            # item ending will bring it under. Said once; live_progress.json has the figures now.
            self.memory_hold = memory_alone_text(self.batch, used, mem.rss_mb, limit)
            if not self._mem_alone:
                self._mem_alone = True
                self._warn(self.memory_hold)
        if not over and self._mem_waiting:
            self._warn("memory back under the limit: dispatch goes on")
            self.memory_hold = None
            self._mem_alone = False
        self._mem_waiting = over
        return not over
