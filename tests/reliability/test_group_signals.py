"""SIGTERM or SIGHUP sent to the engine's whole process group (a closed terminal, ``kill --
-PGID``, a service manager's stop) stops the run as one sent to the engine does: the running
items get ``--grace`` and end as they would. Pool workers died of it at once: their items were
lost (WorkerLost, an attempt spent; failed for good at ``--max-attempts 1``)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .helpers import kill_group, only_batch, start, store_items, wait_until

#: Items that note their start, then take a second: the signal comes while both workers run one.
SLOW = """
import pathlib, time
def work(item):
    pathlib.Path(__file__).with_name("started-" + item.key).touch()
    time.sleep(1.0)
    return item.key
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_group_signal_gives_the_running_python_calls_their_grace(tmp_path: Path, sig: signal.Signals) -> None:
    module = tmp_path / "slow.py"
    module.write_text(SLOW)
    source = tmp_path / "items.txt"
    source.write_text("".join(f"k{i}\n" for i in range(6)))
    out = tmp_path / "out"
    proc = start(
        ["run", str(source), "--call", f"{module}:work", "--executor", "process", "-j", "2",
         "--grace", "30", "--max-attempts", "1", "--headless"],
        out=out, cwd=tmp_path,
    )  # fmt: skip
    wait_until(lambda: len(list(tmp_path.glob("started-*"))) == 2, 60, "two calls running")
    kill_group(proc, sig)  # to the engine and its workers alike
    assert proc.returncode == 130
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    # multiprocessing's resource tracker, killed by the hang-up, said so with a traceback a semaphore.
    assert "Traceback" not in err and "resource_tracker" not in err, err
    items = store_items(only_batch(out))
    ran = sorted(p.name.removeprefix("started-") for p in tmp_path.glob("started-*"))
    assert len(ran) == 2
    # The two running calls finished; nothing failed; the rest waits for a resume.
    assert {key: status for key, status in items.values() if status != "pending"} == dict.fromkeys(ran, "complete")
