"""The ``batchtui`` process: the CLI, then an exit that skips the interpreter's teardown.

When a verb has returned, everything it promised is on disk: the engine fsynced its files and
closed the store, and the output is flushed below. What Python would still do is finalize
every module and free every object one by one, which for this CLI (pydantic's schemas, click,
the engine's models) takes longer than many verbs themselves (about 70 ms of a 1-item run's
400 ms here). So, as Instagram did for its servers, the process ends with ``os._exit`` once it
has done what an exit must do, in the order Python does it: the non-daemon threads have ended,
the ``atexit`` functions ran (logging's flush among them), stdout and stderr are flushed.

It ends the normal way, finalization included, whenever that is not known to be safe:

- a non-daemon thread is still alive (Python would wait for it);
- user code ran in this process (a ``--call`` module imported here, by the thread executor
  or the preflight check: it may rely on finalization, an object's ``__del__`` that cleans up);
- an exception other than ``SystemExit`` escaped (the traceback is Python's to print);
- a flush of stdout or stderr failed (Python reports it and exits 120).

``batchtui.tui.cli.main`` stays the click group: tests and scripts that call it in-process
never end their own process through here.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import NoReturn

from . import collector

#: DESIGN's exit status for a Ctrl-C (engine/errors.py's EXIT_INTERRUPTED, not imported here:
#: this module's imports are the ones a Ctrl-C can still cut short).
_INTERRUPTED = 130


def run() -> NoReturn:
    """The console script and ``python -m batchtui.tui.cli``: the CLI, then :func:`leave`."""
    collector.pause()  # until the verb's module is imported (collector.py)
    _interrupt_on_term()
    try:
        from .group import main  # click and the group: a Ctrl-C comes here as often as anywhere
    except KeyboardInterrupt:
        _say_interrupted()
        leave(_INTERRUPTED)
    _main_is_the_package()
    _standard_descriptors()
    _tolerant_stdout()
    try:
        main(prog_name="batchtui")
    except SystemExit as exc:
        leave(exc.code)
    leave(0)  # standalone click always raises SystemExit; a plain return means success


def _interrupt_on_term() -> None:
    """SIGTERM and SIGHUP end the start (the imports, the arguments) as a Ctrl-C does, as the
    group makes them do for the verb: "interrupted" and exit 130 (DESIGN), not death by the
    signal's default action with nothing said (143, 129). One ignored stays ignored (nohup)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, interrupt)
        except ValueError:  # not the main thread
            return


def _say_interrupted() -> None:
    """The group's line for a Ctrl-C no verb handled (tui/cli/group.py), not a traceback."""
    try:
        print("interrupted", file=sys.stderr)
    except (OSError, ValueError):  # a hung-up terminal
        pass


def _main_is_the_package() -> None:
    """The console script says it is ``batchtui.tui.cli.__main__``, as ``python -m`` would.

    A process-pool worker is a fresh interpreter (multiprocessing's spawn), which first runs
    the parent's main module again, unless that module is a package's ``__main__``. The console
    script (pip's wrapper, a file without a module name) was run again in each worker: the CLI's
    import, click and all, about 30-50 ms of CPU per worker before its first item, on cores the
    engine's own start shares. The wrapper holds nothing a worker needs."""
    import importlib.machinery

    script = sys.modules.get("__main__")
    if script is None or getattr(script, "__spec__", None) is not None:
        return  # `python -m batchtui.tui.cli`, or a program that imported this module
    if getattr(script, "run", None) is not run:
        return  # not pip's wrapper of this function
    script.__spec__ = importlib.machinery.ModuleSpec(f"{__package__}.__main__", None)


def _standard_descriptors() -> None:
    """Descriptors 0, 1 and 2 closed when the process started (``<&-``, ``>&-``, a daemon's
    closed fds) are opened on /dev/null, as daemons do. Left closed, Python sets ``sys.stdin``
    (or stdout, stderr) to None, and code that asks ``sys.stdin.isatty()`` failed with a
    traceback after the batch was created; and the next file the engine opens would take the
    free number, so that whatever writes to "stdout" wrote into it."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False, errors="backslashreplace"))  # noqa: SIM115


def _tolerant_stdout() -> None:
    """A character stdout's encoding cannot take (``PYTHONIOENCODING=ascii``, a latin-1
    terminal) is written as an escape (``\\u5bbd``), as Python always does on stderr, instead of
    ending the command with a UnicodeEncodeError. Data meant to be exact (``export``) is written
    as UTF-8 whatever the encoding."""
    stream = sys.stdout
    if stream is not None and getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


def leave(code: object) -> NoReturn:
    """End the process with ``code`` (a ``SystemExit`` code), without finalizing the interpreter
    when that is safe (the module docstring says when). Then the verb's outcome is decided
    and only flushes are left: a signal changes nothing of it (the exit status was the
    signal's). Python's own exit (threads to wait for) stays interruptible."""
    if not _may_skip_teardown():
        raise SystemExit(code)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # (the main thread: _may_skip_teardown said so)
    status = _status(code)
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the descriptor was closed when Python started (`>&-`)
                stream.flush()
    except (OSError, ValueError):  # a closed pipe, a full disk, a closed stream
        raise SystemExit(code) from None  # Python's own exit reports it, as it always did
    os._exit(status)


def _may_skip_teardown() -> bool:
    main_thread = threading.main_thread()
    if threading.current_thread() is not main_thread:
        return False
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return False
    callables = sys.modules.get("batchtui.engine.callables")
    return not (callables is not None and callables.user_code_ran())


def _status(code: object) -> int:
    """The process status Python gives a ``SystemExit(code)``; a message is printed, as Python
    prints it (on stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except (OSError, ValueError):
        pass
    return 1


__all__ = ["leave", "run"]
