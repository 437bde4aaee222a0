"""Python processors used by the tests through ``--call tests/procs.py:NAME``."""

from __future__ import annotations

import os
import random
import time
from typing import Any


def _log_start(item: Any) -> None:
    path = os.environ.get("BTUI_TEST_EXEC_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{item.seq} {item.attempt}\n".encode())
        finally:
            os.close(fd)


def record_and_work(item: Any) -> dict[str, Any]:
    """Logs each execution start, works 2-15 ms, returns a result derived from the item."""
    _log_start(item)
    time.sleep(random.uniform(0.002, 0.015))
    return {"seq": item.seq, "double": item.seq * 2, "line": item.data}


def noop(item: Any) -> None:
    return None


def flaky(item: Any) -> dict[str, int]:
    """Fails transiently on the first attempt of every third item."""
    _log_start(item)
    if item.seq % 3 == 0 and item.attempt == 1:
        raise ConnectionError(f"reset on {item.seq}")
    return {"seq": item.seq}


def costly(item: Any) -> dict[str, float]:
    time.sleep(0.01)
    return {"cost": 1.0}


def slow_switch(item: Any) -> dict[str, int]:
    """50 ms per item; items with seq % 10 == 3 fail while the file $BTUI_TEST_SWITCH exists."""
    time.sleep(0.05)
    switch = os.environ.get("BTUI_TEST_SWITCH")
    if switch and item.seq % 10 == 3 and os.path.exists(switch):
        raise ValueError(f"switch on for {item.seq}")
    return {"seq": item.seq}


def always_transient(item: Any) -> None:
    raise TimeoutError(f"upstream slow for {item.seq}")


def classify_me(item: Any) -> dict[str, int]:
    """Raises a different exception class by the item's line."""
    from batchtui.engine import Fatal

    kind = item.data
    if kind == "value":
        raise ValueError("bad value")
    if kind == "conn":
        raise ConnectionError("refused")
    if kind == "fatal":
        raise Fatal("api key expired")
    return {"ok": 1}


def fail_marked(item: Any) -> dict[str, int]:
    """Fails (ValueError, no retry) when the item's line starts with "fail"."""
    if str(item.data).startswith("fail"):
        raise ValueError(f"marked {item.seq}")
    return {"seq": item.seq}


def half_fail(item: Any) -> dict[str, int]:
    time.sleep(0.01)
    if item.seq % 2:
        raise ValueError(f"odd {item.seq}")
    return {"seq": item.seq}


def sleepy(item: Any) -> None:
    time.sleep(30)


def exits_hard(item: Any) -> None:
    """Ends its worker process at once, as a C extension's abort or a stray os._exit does."""
    os._exit(3)


def stubborn(item: Any, seconds: float = 30, until: str | None = None) -> None:
    """Sleeps on through whatever a kill raises in it: only its process's death ends it (or, if
    given, the file ``until`` appearing)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (until and os.path.exists(until)):
        try:
            time.sleep(0.05)
        except BaseException:  # the point: a call that does not unwind
            pass


def nap_or_hang(item: Any) -> None:
    """0.6 s per item, except seq 3 which outlasts any timeout the tests set."""
    time.sleep(8 if item.seq == 3 else 0.6)


def chunk_double(items: list[Any]) -> list[dict[str, int]]:
    return [{"seq": it.seq, "n": len(items)} for it in items]


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


def base_exceptions(item: Any) -> dict[str, int]:
    """Item 3 calls sys.exit(3), 5 raises KeyboardInterrupt, 7 an exception whose __str__ raises."""
    import sys

    _log_start(item)
    if item.seq == 3:
        sys.exit(3)
    if item.seq == 5:
        raise KeyboardInterrupt
    if item.seq == 7:
        raise _BadStr
    return {"seq": item.seq}


def slow_one(item: Any) -> dict[str, int]:
    """Logs its start; 1 ms of work, except item $BTUI_TEST_SLOW_SEQ, which takes 30 s."""
    _log_start(item)
    time.sleep(30 if item.seq == int(os.environ.get("BTUI_TEST_SLOW_SEQ", "-1")) else 0.001)
    return {"seq": item.seq}


def soak_item(item: Any) -> dict[str, int]:
    """Logs 'SEQ ATTEMPT TIME' at its start, works 20-150 ms, fails for one item in eight."""
    path = os.environ["BTUI_TEST_EXEC_LOG"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{item.seq} {item.attempt} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    rng = random.Random(item.seq * 31 + item.attempt)
    time.sleep(rng.uniform(0.02, 0.15))
    if rng.random() < 0.125:
        raise ValueError(f"unlucky {item.seq}")
    return {"seq": item.seq}


def wait_for_file(item: Any) -> dict[str, int]:
    """Runs until the file $BTUI_TEST_RELEASE exists (a call that cannot be killed)."""
    _log_start(item)
    release = os.environ["BTUI_TEST_RELEASE"]
    while not os.path.exists(release):
        time.sleep(0.01)
    return {"seq": item.seq}


def held_one(item: Any) -> dict[str, int]:
    """Returns at once, except item $BTUI_TEST_HELD_SEQ, which waits (up to 60 s) for the
    file $BTUI_TEST_RELEASE: a slow item behind quick ones in the same chunk."""
    if item.seq == int(os.environ.get("BTUI_TEST_HELD_SEQ", "-1")):
        release = os.environ["BTUI_TEST_RELEASE"]
        deadline = time.monotonic() + 60
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
    return {"seq": item.seq}


def held_one_logged(item: Any) -> dict[str, int]:
    """:func:`held_one`, each start logged in $BTUI_TEST_EXEC_LOG."""
    _log_start(item)
    return held_one(item)


class Throttled(ConnectionError):
    """An HTTP 429: transient, with the server's Retry-After as ``retry_after`` (seconds)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def fetch_url(item: Any) -> dict[str, Any]:
    """GET the item's URL (a line); a 429 raises :class:`Throttled` with its Retry-After."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(item.data, timeout=10) as response:
            return {"status": response.status, "body": response.read().decode()}
    except urllib.error.HTTPError as exc:
        if exc.code == 429:
            header = exc.headers.get("Retry-After")
            raise Throttled(f"429 from {item.data}", float(header) if header else None) from None
        raise


def poison(item: Any) -> dict[str, int]:
    """Works $BTUI_TEST_SLEEP seconds (5 ms), but takes its whole process down half-way
    (``os._exit(9)``, as a segfault in a C extension would) on the item whose key is
    $BTUI_TEST_POISON; logs each start."""
    _log_start(item)
    work = float(os.environ.get("BTUI_TEST_SLEEP", "0.005"))
    if item.key == os.environ.get("BTUI_TEST_POISON"):
        time.sleep(work / 2)
        os._exit(9)
    time.sleep(work)
    return {"seq": item.seq}


def poison_chunk(items: list[Any]) -> list[dict[str, int]]:
    """:func:`poison` for ``--chunk-size``: the chunk holding the item $BTUI_TEST_POISON takes
    its whole process down; logs each item's start."""
    for item in items:
        _log_start(item)
    time.sleep(float(os.environ.get("BTUI_TEST_SLEEP", "0.005")))
    if any(item.key == os.environ.get("BTUI_TEST_POISON") for item in items):
        os._exit(9)
    return [{"seq": item.seq} for item in items]


def hang_marked(item: Any) -> dict[str, int]:
    """Logs its start; the items named in $BTUI_TEST_HANG (seqs, comma-separated; "all") never
    return (two minutes, swallowing whatever is raised in them, or until the file
    $BTUI_TEST_RELEASE appears), the others return after $BTUI_TEST_NAP_S seconds (0)."""
    _log_start(item)
    marked = os.environ.get("BTUI_TEST_HANG", "")
    if marked == "all" or str(item.seq) in marked.split(","):
        stubborn(item, 120, os.environ.get("BTUI_TEST_RELEASE"))
    time.sleep(float(os.environ.get("BTUI_TEST_NAP_S", "0")))
    return {"seq": item.seq}


def hang_marked_chunk(items: list[Any]) -> list[dict[str, int]]:
    """A chunked callable: the chunk holding a seq named in $BTUI_TEST_HANG never returns (as
    :func:`hang_marked`); the others return a result an item."""
    for item in items:
        _log_start(item)
    marked = os.environ.get("BTUI_TEST_HANG", "").split(",")
    if any(str(item.seq) in marked for item in items):
        stubborn(items[0], 120, os.environ.get("BTUI_TEST_RELEASE"))
    return [{"seq": item.seq} for item in items]
