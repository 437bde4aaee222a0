"""A resume that moves a batch off the dask cluster it last ran on (``--scheduler``).

``batchtui resume B --executor process`` (a Python call that hangs can be killed there, not in a
dask worker's thread), or ``--scheduler`` naming another cluster: the items of an earlier run of
the batch may still run on the old cluster (its engine was killed -9, or it gave up calls it
could not stop), and run here a second time at once (DESIGN section 6: no item runs in two
processes at once). A resume on the same cluster waits for them (:mod:`.dask_orphans`); one that
leaves it cannot, so before anything runs the engine takes the batch there, as such a resume
does: nothing more of the earlier runs begins, their shell items are killed, and it waits a
moment for those to end. An item still running then (a Python call) refuses the resume, naming
it and the ways on; so does a worker that does not answer (a call holding its GIL blocks it: it
may well run one). A scheduler that does not answer is said, and the run goes on: nothing can
tell then what still runs there, and the warning says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from .config import BatchConfig
from .errors import UserError
from .fmt import count

if TYPE_CHECKING:
    from .dask_cluster import DaskCluster

#: How long a resume that leaves a cluster waits for its killed shell items to end.
KILLED_WAIT_S: Final = 10.0
#: How long it waits for the old cluster's scheduler to answer.
ANSWER_WAIT_S: Final = 5.0


class ClusterStillRuns(UserError):
    """An earlier run's items still run on the cluster the batch is leaving."""


def cluster_left(last: Mapping[str, Any], config: BatchConfig) -> str | None:
    """The scheduler's address of the cluster the batch last ran on (``last``: that run's config,
    as the manifest keeps it) when this run (``config``) runs elsewhere; else None."""
    address = last.get("scheduler") if last.get("executor") == "dask" else None
    if not isinstance(address, str) or not address:
        return None
    if config.executor == "dask" and config.scheduler and _same(config.scheduler, address):
        return None
    return address


def _same(a: str, b: str) -> bool:
    """Whether two --scheduler values name one scheduler: ``127.0.0.1:8786`` is
    ``tcp://127.0.0.1:8786``, and ``tcp://localhost:8786`` too where localhost is 127.0.0.1."""
    import socket
    from urllib.parse import urlsplit

    a, b = ((x if "://" in x else f"tcp://{x}").rstrip("/") for x in (a, b))
    if a == b:
        return True
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        if pa.scheme != pb.scheme or pa.port is None or pa.port != pb.port or not pa.hostname or not pb.hostname:
            return False
        ips = [{info[4][0] for info in socket.getaddrinfo(p.hostname, p.port)} for p in (pa, pb)]
    except (OSError, ValueError):
        return False
    return bool(ips[0] & ips[1])


def _where(address: str) -> str:
    return f"the dask cluster at {address} this batch last ran on"


def _connect(address: str) -> tuple[DaskCluster | None, str]:
    """A client of the cluster at ``address``, or None and what the run's warnings say."""
    from .dask_cluster import DaskCluster

    try:
        cluster = DaskCluster(BatchConfig(executor="dask", scheduler=address))
    except UserError as exc:  # dask is no longer installed here
        return None, (
            f"{_where(address)} cannot be asked whether items of its runs still run there ({exc}):"
            " such an item would run a second time here"
        )
    from .preflight import scheduler_unreachable  # (it imports this module)

    # A probe first: on a port that takes the connection and says nothing, a dask client waits for
    # ever (distributed#8071).
    problem = scheduler_unreachable(address, ANSWER_WAIT_S)
    if problem is None:
        try:
            cluster.connect(timeout=ANSWER_WAIT_S)
            return cluster, ""
        except UserError as exc:
            problem = ("reach", str(exc))
        except Exception as exc:  # an address the client reads otherwise
            problem = ("reach", f"{type(exc).__name__}: {exc}")
    cluster.close(wait=1.0)
    return None, (
        f"{_where(address)} does not answer ({problem[1]}): an item an earlier run left running on one of"
        " its workers (an engine killed -9, a Python call given up) would run a second time here"
    )


def _refusal(address: str, seqs: set[int] | None, kind: str) -> str:
    """Why the batch may not leave the cluster (``seqs`` None: not every worker answered)."""
    from .dask_orphans import seq_list

    if seqs is None:
        what = (
            f"not every worker of {_where(address)} answered whether items of an earlier run of this batch"
            " still run there (one busy with a call that holds its GIL, or hung?); such an item would run"
            " twice at once if run here too"
        )
    else:
        why = "killed, and not ended yet" if kind == "shell" else "a Python call cannot be stopped there"
        one = len(seqs) == 1
        what = (
            f"{count(len(seqs), 'item')} of an earlier run of this batch still {'runs' if one else 'run'}"
            f" on {_where(address)} ({seq_list(seqs)}: {why}); run here too, {'it' if one else 'each'}"
            " would run twice at once"
        )
    return (
        f"{what}. Resume on that cluster (--executor dask --scheduler {address}: it waits for them to end),"
        " or end them there (restart its workers), then resume here"
    )


def check_left_cluster(address: str, batch_dir: Path, kind: str) -> tuple[Literal["ok", "warn", "fail"], str]:
    """What a resume's checks say of the cluster it leaves, asking only (nothing is taken or
    killed: ``batchtui check`` runs them too): (level, message) for the preflight."""
    from .dask_worker import batch_token, running_on_worker

    cluster, why = _connect(address)
    if cluster is None:
        return "warn", why
    try:
        answers, complete = cluster.ask_all(running_on_worker, batch_token(str(batch_dir)))
    finally:
        cluster.close(wait=1.0)
    running = {seq for reply in answers for seq in reply}
    if not complete:
        return "fail", _refusal(address, None, kind)
    if running and kind != "shell":
        return "fail", _refusal(address, running, kind)
    if running:
        verb = "runs" if len(running) == 1 else "run"
        return "warn", (
            f"{count(len(running), 'shell item')} of an earlier run still {verb} on {_where(address)}:"
            " killed before this run starts"
        )
    return "ok", f"nothing of this batch runs on {_where(address)} any more"


def leave_cluster(address: str, batch_dir: Path, kind: str) -> str | None:
    """Take the batch on the cluster at ``address`` (see the module docstring): what the run's
    warnings say (None: nothing was left there), or :class:`ClusterStillRuns`."""
    from .dask_worker import batch_token, orphans_on_worker, take_batch_on_worker

    cluster, why = _connect(address)
    if cluster is None:
        return why
    try:
        token, me = batch_token(str(batch_dir)), f"batchtui-leave-{os.getpid()}-{time.monotonic_ns()}"
        answers, complete = cluster.ask_all(take_batch_on_worker, token, me)
        left = {seq for reply in answers for seq in reply}
        killed = len(left) if kind == "shell" else 0
        deadline = time.monotonic() + (KILLED_WAIT_S if kind == "shell" else 0.0)
        while left and complete and time.monotonic() < deadline:
            time.sleep(0.2)
            answers, complete = cluster.ask_all(orphans_on_worker, token, me)
            left = {seq for reply in answers for seq in reply} if complete else left
        if left or not complete:
            raise ClusterStillRuns(_refusal(address, left if complete else None, kind))
        return (
            f"killed {count(killed, 'shell item')} an earlier run left running on {_where(address)}" if killed else None
        )
    finally:
        cluster.close(wait=1.0)
