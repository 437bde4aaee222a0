"""A callable that uses up the process's file descriptors on the thread executor (it shares
the engine's) halts the run with a reason, not a traceback: the engine's own write that found
none left says so, the spare descriptors kept aside at its start let the final files be
written, and the batch resumes to the end.

Before, the engine's next write raised a bare OSError (EMFILE): a traceback, the manifest left
"running", no report."""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

from .conftest import CLI, cli_env, only_batch

HOG = """import os, time
_keep = []

def f(item):
    if item.seq == 5 and not os.environ.get("HOG_DONE"):
        try:
            while True:
                _keep.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
    time.sleep(0.005)
    return item.seq
"""


def _low_limit() -> None:  # in the child, before it starts: a limit the test can use up fast
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_a_callable_that_uses_up_the_descriptors_halts_the_run_with_a_reason(
    tmp_path: Path,
    out_dir: Path,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "hog.py").write_text(HOG)
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(300)))
    env = cli_env(out_dir)
    args = ["run", "items.txt", "--call", "hog.py:f", "--executor", "thread", "-j", "1", "--headless"]
    done = subprocess.run(
        [*CLI, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_low_limit,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "used up its file descriptors" in done.stderr
    batch = only_batch(out_dir)
    manifest = json.loads((batch / "manifest.json").read_text())
    assert manifest["state"] == "halted"
    assert manifest["halt_reason"].startswith("out of file descriptors: ")
    report = json.loads((batch / "report.json").read_text())
    assert report["state"] == "halted" and report["totals"]["pending"] > 0
    # Resumed (the callable no longer hogs): every item once.
    again = run_cli(["resume", batch.name, "--headless"], env={"HOG_DONE": "1"})
    assert again.returncode == 0, again.stdout + again.stderr
    seqs = [json.loads(line)["seq"] for line in (batch / "results.jsonl").read_text().splitlines()]
    assert sorted(seqs) == list(range(300))
