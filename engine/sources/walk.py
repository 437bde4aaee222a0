"""A directory walk, streamed, and explicit files.

The walk keeps only the sorted entries of the directories on the current path (a tree of a
million files is never listed whole), yields files in name order, resolves each directory once
(a file's key is its resolved path) and never follows a link unless asked (then it does not
loop). What it cannot read is counted, never skipped in silence (see the package docstring).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterator

from ..errors import UserError
from ..fmt import clean, kind_of
from ..models import Unreadable
from .spec import SourceItem, SourceSpec


def _file_item(real: str) -> SourceItem:
    try:
        real.encode("utf-8")
    except UnicodeEncodeError:
        # A name of raw bytes: the data keeps them (surrogate escapes, as os.fsdecode gives
        # them), the key, which is UTF-8 text everywhere, shows them as \xNN.
        return SourceItem(key=os.fsencode(real).decode("utf-8", "backslashreplace"), data=real)
    return SourceItem(key=real, data=real)


def explicit_file(path: str) -> SourceItem:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UserError(f"cannot read {clean(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"not a regular file: {clean(path)}")
    return _file_item(os.path.realpath(path))


def _glob_matcher(pattern: str | None) -> Callable[[str, str], bool] | None:
    """(name, relative posix path) -> matches. Without "/" the pattern matches the name only, at
    any depth (``*.py``); with one, the path from the directory as a shell matches it: ``*`` and
    ``?`` stay within a folder, ``**/`` is any number of folders, none included (``**/*.csv``
    takes ``top.csv`` too, ``a/*.csv`` not ``a/b/deep.csv``)."""
    if pattern is None:
        return None
    if "/" in pattern:
        match = re.compile(path_glob_regex(pattern)).match
        return lambda _name, rel: match(rel) is not None
    by_name = re.compile(fnmatch.translate(pattern)).match
    return lambda name, _rel: by_name(name) is not None


def path_glob_regex(pattern: str) -> str:
    """The regex of a path glob (see :func:`_glob_matcher`), anchored at both ends."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (end := pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)) > 0:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^/" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "(?s:" + "".join(out) + r")\Z"


def _scan(path: str) -> list[os.DirEntry[str]]:
    """The entries of one directory, sorted by name (OSError when it cannot be read)."""
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _path_max(path: str) -> int:
    """The longest path (in bytes, with its NUL) the system opens: PATH_MAX, 4096 on Linux."""
    try:
        return os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def _reason(exc: OSError, path_max: int) -> str:
    """Why a path could not be read, in a few words."""
    if exc.errno == errno.ENAMETOOLONG:
        return f"path longer than PATH_MAX, {path_max} bytes"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _shown_path(path: str) -> str:
    """A path for an example of what could not be read: escaped, and its middle cut when long."""
    shown = clean(path)
    return shown if len(shown) <= 160 else f"{shown[:70]}...{shown[-70:]}"


def _leave_out_link(
    de: os.DirEntry[str], rel_dir: str, matcher: Callable[[str, str], bool] | None, unreadable: Unreadable
) -> None:
    """A link the walk does not follow is counted where following it would have given items: a
    link to a folder, or to a file the glob takes. A broken one would give nothing."""
    try:
        target = os.stat(de.path)
    except OSError:
        return
    if stat.S_ISDIR(target.st_mode):
        unreadable.leave_out(_shown_path(de.path), "a symbolic link to a folder, not followed: --follow-symlinks")
    elif stat.S_ISREG(target.st_mode) and (matcher is None or matcher(de.name, rel_dir + de.name)):
        unreadable.leave_out(_shown_path(de.path), "a symbolic link, not followed: --follow-symlinks")


def _special_kind(path: str) -> str:
    try:
        return kind_of(os.stat(path).st_mode, "a special file")
    except OSError:
        return "a special file"


def _refuse_excluded_root(root: str, exclude: set[str]) -> None:
    """A folder to walk that is an excluded one (the batches' output folder) or inside it: its
    files are the batches' own (their stores, results, logs, locks), never items. A walk prunes
    such a folder where it meets it below; given as the source itself (`run out -o out`, `add B
    out`, `add B out/B`) it is refused, not walked."""
    real = os.path.realpath(root)
    for folder in exclude:
        if real == folder or real.startswith(folder.rstrip(os.sep) + os.sep):
            where = "is" if real == folder else f"is inside {clean(folder)},"
            raise UserError(
                f"the source {clean(root)} {where} the folder batchtui keeps its batches in: its files are"
                " the batches' own (stores, results, logs), not items; give the folder the items are in,"
                " or keep the batches elsewhere (-o)"
            )


def walk_dir(root: str, spec: SourceSpec, unreadable: Unreadable) -> Iterator[SourceItem]:
    follow = spec.follow_symlinks
    matcher = _glob_matcher(spec.glob)
    exclude = {os.path.realpath(p) for p in spec.exclude}
    try:
        st = os.stat(root)
        top = _scan(root)
    except OSError as exc:
        raise UserError(f"cannot read directory {clean(root)}: {exc.strerror or exc}") from None
    _refuse_excluded_root(root, exclude)
    path_max = _path_max(root)
    # A path of as many characters as this may be too long (a character is 1 to 4 bytes): only
    # those are measured in bytes.
    long_chars = path_max // 4
    # Directories already entered, by identity; only needed when symlinks can make loops.
    visited = {(st.st_dev, st.st_ino)}
    # One frame per directory on the current path: (its resolved path, its path relative to the
    # root with a trailing "/", its remaining sorted entries). Resolving once per directory
    # spares a realpath() per file: below a resolved directory, a non-link name is resolved.
    stack: list[tuple[str, str, Iterator[os.DirEntry[str]]]] = [(os.path.realpath(root), "", iter(top))]
    while stack:
        real_dir, rel_dir, entries = stack[-1]
        de = next(entries, None)
        if de is None:
            stack.pop()
            continue
        name = de.name
        if spec.skip_hidden and name.startswith("."):
            continue
        try:
            is_link = de.is_symlink()
            if is_link and not follow:
                _leave_out_link(de, rel_dir, matcher, unreadable)
                continue
            if de.is_dir(follow_symlinks=follow):
                real_sub = os.path.realpath(de.path) if is_link else os.path.join(real_dir, name)
                if real_sub in exclude:
                    continue
                if follow:
                    sst = de.stat(follow_symlinks=True)
                    ident = (sst.st_dev, sst.st_ino)
                    if ident in visited:
                        continue
                    visited.add(ident)
                try:
                    sub = _scan(de.path)
                except OSError as exc:  # not fatal, never silent: counted and shown
                    if exc.errno != errno.ENOENT:
                        unreadable.add(_shown_path(de.path), _reason(exc, path_max))
                    continue
                stack.append((real_sub, f"{rel_dir}{name}/", iter(sub)))
                continue
            if not de.is_file(follow_symlinks=follow):
                if is_link and not os.path.exists(de.path):
                    unreadable.add(_shown_path(de.path), "broken symbolic link")
                elif matcher is None or matcher(name, rel_dir + name):
                    unreadable.leave_out(_shown_path(de.path), f"{_special_kind(de.path)}, not a regular file")
                continue
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # else it vanished while walking: nothing to read
                unreadable.add(_shown_path(de.path), _reason(exc, path_max))
            continue
        if matcher is not None and not matcher(name, rel_dir + name):
            continue
        path = os.path.realpath(de.path) if is_link else os.path.join(real_dir, name)
        if len(path) >= long_chars and len(os.fsencode(path)) >= path_max:
            # Nothing can open it by its path: counted, rather than an item that can never run.
            unreadable.add(_shown_path(path), _reason(OSError(errno.ENAMETOOLONG, ""), path_max))
            continue
        yield _file_item(path)
