"""The shell-template processor (``--cmd``) and the item objects every processor receives.

One module per concern, read in this order:

- :mod:`.item`: :class:`Item` (what a processor gets) and :class:`ProcessOutput` (what it returns).
- :mod:`.template`: the ``--cmd`` template, parsed once and rendered per item, every value
  shell-quoted; :mod:`.quoting` follows the template's own shell quoting so a value inside the
  user's quotes stays quoted, and refuses the places no quoting can make safe.
- :mod:`.spawn`: starting the shell, one backend per platform chosen once (glibc's posix_spawn
  through ctypes in :mod:`.spawn_glibc`, :class:`subprocess.Popen` elsewhere).
- :mod:`.wait`: the shell's pipes and its exit, one backend per platform chosen once (pidfd on
  Linux, kqueue on macOS and the BSDs in :mod:`.wait_kqueue`, ``waitid(WNOWAIT)``, polling last).
- :mod:`.output`: the tails of stdout and stderr, and the result read from stdout.
- :mod:`.itemfiles`: logs, ``{out}`` folders and the item's variables, written in the batch
  directory without following a link.
- :mod:`.processor`: :class:`ShellProcessor`, which ties them together.

A value that begins with ``-`` is only quoted, never altered: a command may read it as an option,
so templates should put ``--`` before it or use a ``./`` path. Data is never changed silently.
Quoting makes a value one literal word; a command that evaluates its arguments (``eval``,
``sh -c {}``, bash's ``[[ {} -eq 1 ]]``) still does what that command does with it.
A NUL byte cannot travel through ``exec``: the item fails with a clear message instead. A file
name that is not UTF-8 comes as Python's surrogate-escaped str: ``{path}`` passes its exact
bytes, the JSON has ``\\udcXX`` escapes for the bytes that do not decode.

The package imports none of them: import the module you need (``from .shell.item import Item``).
A Python callable's worker process needs only :mod:`.item`, and its imports are the wait for its
first result.
"""
