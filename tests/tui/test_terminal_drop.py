"""The terminal dies under a TUI whose engine runs in it: the batch always ends `finished` under
a background engine, and the TUI always ends, whatever it was doing.

Real processes on real terminals: the TUI runs in a tmux pane (a private tmux server each
round) or over ``ssh -tt`` to an sshd on a loopback port, and the terminal is killed as it
dies in life: the tmux server or session killed (the pty master closes: SIGHUP, then EOF and
EIO on the tty), SIGHUP or SIGTERM to the TUI, ``kill -9`` of the ssh client. Under load: items
in flight (some longer than the hand-off's grace), a modal open, the engine finishing at that
moment, a second ``resume`` racing for the batch. The default suite runs a few short rounds;
``-m slow`` runs the soak (BTUI_DROP_ROUNDS rounds, 32 by default) and the SSH rounds.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchtui.engine.batchdir import engine_alive

from .terminals import (
    CLI,
    Tmux,
    assert_handed_over,
    follow_until_finished,
    gone,
    item_processes,
    kill_quietly,
    process_of,
    start_sshd,
    tui_env,
    wait_until,
)

CALL = Path(__file__).with_name("drop_items.py")


@dataclass(frozen=True)
class Round:
    """One drop: how the terminal dies, and what the TUI is doing then."""

    drop: str  # kill-server | kill-session | hup | term | ssh-kill9
    items: int = 24
    cmd: str = "sleep 0.4"
    workers: int = 4
    modal: str = ""  # "" | quit | help
    finishing: bool = False  # drop when every item left is in flight
    finished: bool = False  # drop after the engine in the app has finished the batch
    racer: str = ""  # "" | id (resume BATCH) | bare (resume with no BATCH)
    call: bool = False  # a --call function on the thread executor instead of a shell command


def _argv(r: Round, items: Path) -> list[str]:
    argv = [*CLI, "run", str(items), "-j", str(r.workers)]
    if r.call:
        return [*argv, "--call", f"{CALL}:work", "--executor", "thread"]
    return [*argv, "--cmd", r.cmd]


def _drop_round(tmp: Path, r: Round, sshd: object = None) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / "out"
    items = tmp / "items.txt"
    items.write_text("".join(f"{i}\n" for i in range(r.items)))
    env = tui_env(tmp, out)
    tmux: Tmux | None = None
    ssh: subprocess.Popen[bytes] | None = None
    racer: subprocess.Popen[bytes] | None = None
    tui_pid, tui_proc = -1, None
    try:
        if r.drop == "ssh-kill9":
            assert sshd is not None
            passed = {k: v for k, v in env.items() if k.startswith(("BATCHTUI_", "XDG_")) or k == "PYTHONPATH"}
            settings = [f"{k}={shlex.quote(v)}" for k, v in passed.items()]
            remote = " ".join(
                [f"cd {shlex.quote(str(tmp))} &&", *settings, "TERM=xterm-256color", shlex.join(_argv(r, items))]
            )
            ssh = subprocess.Popen(
                sshd.argv(remote),  # type: ignore[attr-defined]
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        else:
            tmux = Tmux(tmp)
            tmux.start(_argv(r, items), cwd=tmp, env=env)
        wait_until(lambda: list(out.glob("*/live_progress.json")), 30, "the TUI's batch starts")
        batch = next(out.glob("*/live_progress.json")).parent
        holder = None

        def engine_in_tui() -> bool:
            nonlocal holder
            holder = engine_alive(batch)
            return holder is not None and holder.pid > 0

        wait_until(engine_in_tui, 20, "the TUI's engine takes the lock")
        assert holder is not None
        tui_pid, tui_proc = holder.pid, process_of(holder.pid)
        threshold = r.items - r.workers if r.finishing else r.workers

        def progressed() -> bool:
            return (
                sum(1 for _ in open(batch / "results.jsonl", "rb")) >= threshold
                if (batch / "results.jsonl").exists()
                else False
            )

        wait_until(progressed, 60, f"{threshold} items done")
        if r.finished:
            wait_until(lambda: engine_alive(batch) is None, 60, "the engine in the app finishes")
        if r.modal and tmux is not None:
            tmux.keys("q" if r.modal == "quit" else "?")
            # The help's title (tui/screens/modals.py HelpScreen), its first words on any width.
            text = "The engine is running in this app" if r.modal == "quit" else "Keys: the dashboard"
            wait_until(lambda: text in tmux.screen(), 10, f"the {r.modal} modal opens")
        procs = item_processes(tui_pid)
        ended_before = engine_alive(batch) is None  # slow machine: the engine in the app was done
        if r.drop == "kill-server":
            assert tmux is not None
            tmux.kill_server()
        elif r.drop == "kill-session":
            assert tmux is not None
            tmux.kill_session()
        elif r.drop == "hup":
            os.kill(tui_pid, signal.SIGHUP)
        elif r.drop == "term":
            os.kill(tui_pid, signal.SIGTERM)
        elif r.drop == "ssh-kill9":
            assert ssh is not None
            ssh.kill()
            ssh.wait()
        if r.racer:
            racer = subprocess.Popen(
                [*CLI, "resume", *([batch.name] if r.racer == "id" else []), "--headless"],
                env=env,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "racer.err", "wb"),  # noqa: SIM115
                start_new_session=True,
            )
        wait_until(lambda: gone(tui_pid), 40, f"the TUI (pid {tui_pid}) ends after the drop ({r})")
        seen = follow_until_finished(batch, tui_pid, 120)
        if racer is not None:
            code = racer.wait(120)
            err = (tmp / "racer.err").read_text()
            assert "Traceback" not in err, err
            # The racer either ran the batch (and then it finished) or was told who runs it.
            assert code in (0, 2), (code, err)
            if code == 2:
                assert "is being run by" in err or "nothing to resume" in err or "no unfinished batch" in err, err
        assert_handed_over(
            batch, n=r.items, tui_pid=tui_pid, item_procs=procs, seen=seen, finished=r.finished or ended_before
        )
    except BaseException:
        if tmux is not None:
            print(f"-- the pane when {r} failed:\n{tmux.screen()}")
        raise
    finally:
        if tmux is not None:
            tmux.kill_server()
        if ssh is not None and ssh.poll() is None:
            ssh.kill()
        if racer is not None and racer.poll() is None:
            racer.kill()  # our child, not reaped yet: its pid is still its own
        kill_quietly(tui_proc)


QUICK = [
    Round("kill-server", modal="quit"),
    Round("term", finishing=True),
    Round("kill-session", racer="id"),
    Round("kill-server", items=8, finished=True),
]


@pytest.mark.parametrize(
    "r",
    QUICK,
    ids=lambda r: f"{r.drop}-{r.modal or 'no-modal'}-{r.racer or 'alone'}{'-finished' if r.finished else ''}",
)
def test_a_dropped_terminal_hands_the_batch_over(tmp_path: Path, r: Round) -> None:
    _drop_round(tmp_path, r)


def _soak_rounds() -> list[Round]:
    drops = ["kill-server", "kill-session", "hup", "term"]
    shapes = [
        {},
        {"modal": "quit"},
        {"modal": "help"},
        {"finishing": True},
        {"racer": "id"},
        {"racer": "bare"},
        {"cmd": "sleep 6", "items": 8, "workers": 4},  # in flight past the hand-off's grace
        {"call": True, "items": 40},
        {"call": True, "items": 40, "finished": True},
    ]
    n = int(os.environ.get("BTUI_DROP_ROUNDS", "32"))
    first = int(os.environ.get("BTUI_DROP_FIRST", "0"))  # to start a soak at a given shape
    combos = itertools.cycle(itertools.product(shapes, drops))
    rounds = itertools.islice(combos, first, first + n)
    return [Round(drop, **{"items": 40, **shape}) for shape, drop in rounds]  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.timeout(7200)  # 32 rounds take 4-8 min
def test_soak_dropped_terminals(tmp_path: Path) -> None:
    for n, r in enumerate(_soak_rounds()):
        t0 = time.monotonic()
        _drop_round(tmp_path / f"round{n}", r)
        print(f"round {n}: {r} held in {time.monotonic() - t0:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ssh_drop_hands_the_batch_over(tmp_path: Path) -> None:
    sshd = start_sshd(tmp_path)
    try:
        for n, r in enumerate([Round("ssh-kill9"), Round("ssh-kill9", racer="bare"), Round("ssh-kill9", call=True)]):
            _drop_round(tmp_path / f"round{n}", r, sshd)
    finally:
        sshd.stop()
