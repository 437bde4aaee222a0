"""Commands started without the shell where dash would only start them: ``gzip -c 'a b' > out``.

``dash -c CMD`` for one simple command costs a whole extra process per item: dash starts,
parses, forks (vfork) the command and waits for it. For a command line that is one external
command with plain words and at most one redirection per descriptor, the glibc spawner runs
the command itself, giving it what dash would have given it:

- the argv dash would build (argv[0] as written), found on the environment's ``PATH`` as dash
  searches it (the first regular executable file; a name with a ``/`` is used as it is);
- the redirections as dash opens them (``>``: truncate, ``>>``: append, both created 0666
  under the umask; ``<``: read), in the order written, after the pipes are in place;
- dash's environment: its variables with a valid name only, and ``PWD`` as dash sets it
  (:func:`dash_pwd`); environments that dash rewrites further (``IFS``, ``OPTIND``, ``PPID``)
  always go through dash;
- dash's report of a death by signal: the shell prints the signal's description (and
  `` (core dumped)``) on its stderr, except for SIGINT and SIGPIPE, and exits 128+N
  (:func:`signal_note`, applied by the shell processor).

Whatever the spawn cannot do the same way (a command not found, not executable, a script
without ``#!``, a redirection that fails, anything else posix_spawn reports) is started again
through dash, which then does and says exactly what it does for any command: the failed spawn
ran nothing, and a file its redirection created or truncated is created or truncated again.
Anything else in the command line (any other shell syntax, an assignment, a builtin or
keyword, a glob, a backslash, ``$``) goes through dash as before. Only where ``/bin/sh`` is
dash: other shells report signals and set the environment their own way.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Final, NamedTuple

__all__ = ["DASH_BUILTINS", "DASH_KEYWORDS", "Plan", "dash_pwd", "find", "is_dash", "parse", "signal_note"]

#: dash 0.5's builtins (``builtins.def``): these never run as a program through dash.
DASH_BUILTINS: Final = frozenset(
    [
        ".",
        ":",
        "[",
        "alias",
        "bg",
        "break",
        "cd",
        "chdir",
        "command",
        "continue",
        "echo",
        "eval",
        "exec",
        "exit",
        "export",
        "false",
        "fc",
        "fg",
        "getopts",
        "hash",
        "jobs",
        "kill",
        "local",
        "printf",
        "pwd",
        "read",
        "readonly",
        "return",
        "set",
        "shift",
        "test",
        "times",
        "trap",
        "true",
        "type",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "wait",
    ]
)
#: dash's reserved words (``{``, ``}`` and ``!`` are never plain words here anyway).
DASH_KEYWORDS: Final = frozenset(
    ["case", "do", "done", "elif", "else", "esac", "fi", "for", "if", "in", "then", "until", "while"]
)
#: Variables dash rewrites when it inherits them: an environment holding one goes through dash.
REWRITTEN: Final = (b"IFS", b"OPTIND", b"PPID")
#: Characters that are literal in an unquoted dash word wherever they stand (``=`` too, except in
#: the first word, where it would make an assignment).
_PLAIN: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./,:+@%=")
#: One piece of a word: plain characters, a '...' string, or a "..." string that expands nothing.
_CHUNK: Final = re.compile(r"[A-Za-z0-9_\-./,:+@%=]+|'[^']*'|\"[^\"$`\\]*\"")
_NAME: Final = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")
_WRITE: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
_APPEND: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND


class Plan(NamedTuple):
    """One simple command: its words and its redirections ``(fd, path, open flags)`` in order."""

    argv: tuple[str, ...]
    redirects: tuple[tuple[int, str, int], ...]


def parse(cmd: str) -> Plan | None:
    """The simple command ``cmd`` is, or None where dash may do more than start one program."""
    words: list[str] = []
    redirects: list[tuple[int, str, int]] = []
    pending: tuple[int, int] | None = None
    i, n = 0, len(cmd)
    while True:
        while i < n and cmd[i] in " \t":
            i += 1
        if i >= n:
            break
        c = cmd[i]
        fd = -1
        if c == "2" and cmd.startswith("2>", i):
            fd, i, c = 2, i + 1, ">"
        elif c == ">":
            fd = 1
        elif c == "<":
            fd = 0
        if fd >= 0:
            if pending is not None:
                return None
            i += 1
            flags = os.O_RDONLY
            if c == ">":
                flags = _WRITE
                if cmd.startswith(">", i):
                    flags, i = _APPEND, i + 1
            if i < n and cmd[i] in "<>&|":
                return None  # >|, >&, <>, <<, <&: dash's own
            pending = (fd, flags)
            continue
        word, i = _word(cmd, i)
        if word is None:
            return None
        if pending is not None:
            redirects.append((pending[0], word, pending[1]))
            pending = None
        else:
            words.append(word)
    if pending is not None or not words or len({r[0] for r in redirects}) != len(redirects):
        return None
    name = words[0]
    if not name or "=" in name or name in DASH_BUILTINS or name in DASH_KEYWORDS:
        return None
    return Plan(tuple(words), tuple(redirects))


def _word(cmd: str, i: int) -> tuple[str | None, int]:
    """The word starting at ``i`` (its quotes removed) and where it ends; None if dash would
    expand or split anything in it, or it runs into an operator."""
    parts: list[str] = []
    n = len(cmd)
    while i < n and cmd[i] not in " \t":
        chunk = _CHUNK.match(cmd, i)
        if chunk is None:
            return None, i
        text = chunk.group()
        parts.append(text if text[0] in _PLAIN else text[1:-1])
        i = chunk.end()
    return "".join(parts), i


def find(name: str, path: bytes | None, cwd: str | None = None) -> bytes | None:
    """The file dash would execute for ``name`` with ``PATH`` = ``path``, running in the folder
    ``cwd`` (None: this process's): the first regular executable file on it (an empty or
    relative entry is looked up in that folder), or None (dash then decides: it tries each entry
    with execve, so one we skip it fails on too)."""
    if "/" in name:
        return os.fsencode(name)  # executed as is, in the command's folder
    if path is None:
        return None
    raw = os.fsencode(name)
    folder = None if cwd is None else os.fsencode(cwd)
    for entry in path.split(b":"):
        candidate = (entry or b".") + b"/" + raw
        if folder is not None and not candidate.startswith(b"/"):
            candidate = os.path.join(folder, candidate)
        try:
            st = os.stat(candidate)
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    return None


def is_dash(shell: str) -> bool:
    """Whether ``shell`` is dash (a link to it counts)."""
    return os.path.basename(os.path.realpath(shell)) == "dash"


def usable_env(env: dict[bytes, bytes]) -> bool:
    """Whether dash would pass ``env`` on as :func:`dash_env` says (else commands go through it);
    a ``%`` in PATH is dash's own syntax (``/dir%builtin``)."""
    return all(key not in env for key in REWRITTEN) and b"%" not in env.get(b"PATH", b"%")


def dash_pwd(env: dict[bytes, bytes], cwd: str) -> bytes:
    """``PWD`` as dash sets it in ``cwd``: the inherited value if it is absolute and names that
    folder, else the folder's physical path."""
    inherited = env.get(b"PWD")
    if inherited is not None and inherited.startswith(b"/"):
        try:
            if os.path.samestat(os.stat(inherited), os.stat(cwd)):
                return inherited
        except (OSError, ValueError):
            pass
    return os.fsencode(os.path.realpath(cwd))


def dash_env(env: dict[bytes, bytes], cwd: str) -> dict[bytes, bytes]:
    """The environment dash gives a command: the variables with a valid name, ``PWD`` set."""
    out = {key: value for key, value in env.items() if _NAME.match(key)}
    out[b"PWD"] = dash_pwd(env, cwd)
    return out


def signal_note(sig: int, core: bool, strsignal: bytes | None) -> bytes:
    """What dash prints on its stderr when its command dies of ``sig`` (nothing for SIGINT and
    SIGPIPE): libc's description of the signal (at most 31 bytes), `` (core dumped)``, a newline."""
    import signal

    if sig in (signal.SIGINT, signal.SIGPIPE) or strsignal is None:
        return b""
    return strsignal[:31] + (b" (core dumped)" if core else b"") + b"\n"
