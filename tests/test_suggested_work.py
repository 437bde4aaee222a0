"""A command batchtui suggests does what it says, for the batch meant.

Found by a hostile sweep: `show` of a batch a live engine runs (paused, say) suggested a resume
that the lock refuses; `pause` of a finished batch suggested a resume that does nothing; an
offline `retry` said "run them with `batchtui resume`", which takes the newest unfinished batch
(another one); `resume --retry-failed` said "10/10 done" after putting 2 of them back.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from .conftest import CLI, cli_env, invoke_in_process, only_batch


def _cli(args: list[str], out: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=cli_env(out), capture_output=True, text=True, timeout=timeout, check=False)


def _suggested(text: str, label: str) -> list[str]:
    """The command of the summary line ``  Label:  batchtui ...``, as a shell reads it."""
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(f"{label}:")]
    words = shlex.split(line.split(":", 1)[1])
    assert words[0] == "batchtui"
    return words[1:]


def test_show_of_a_batch_an_engine_holds_suggests_what_works_on_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(20)))
    started = _cli(["run", str(tmp_path / "items.txt"), "--cmd", "sleep 0.3; [ {} != 1 ]", "-j", "1", "--detach"], out)
    assert started.returncode == 0, started.stderr
    batch = only_batch(out)
    try:
        paused = _cli(["pause", batch.name, "--wait", "30"], out)
        assert paused.returncode == 0, paused.stderr
        shown = _cli(["show", batch.name], out)
        assert shown.returncode == 0, shown.stderr
        assert "Resume:" not in shown.stdout, shown.stdout  # the lock would refuse it
        assert _suggested(shown.stdout, "Watch")[:2] == ["watch", batch.name]
        unpause = _suggested(shown.stdout, "Unpause")
        done = _cli([*unpause, "--wait", "30"], out)
        assert done.returncode == 0 and f"{batch.name}: resume: running" in done.stdout, done.stderr
    finally:
        _cli(["stop", batch.name, "--wait", "30"], out)
        _cli(["wait", batch.name, "--timeout", "60"], out, timeout=90)
    shown = _cli(["show", batch.name], out)
    assert "Watch:" not in shown.stdout and _suggested(shown.stdout, "Resume")[:2] == ["resume", batch.name]


def test_steering_a_finished_batch_says_it_is_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("a\nb\n")
    made = invoke_in_process(["run", "items.txt", "--cmd", "exit 1", "--headless"], out=out, cwd=tmp_path)
    assert made.returncode == 1, made.stderr
    batch = only_batch(out)
    for verb in (["pause"], ["unpause"], ["stop"], ["workers", "3"]):
        done = invoke_in_process(
            [*verb, batch.name] if len(verb) == 1 else [verb[0], batch.name, verb[1]], out=out, cwd=tmp_path
        )
        assert done.returncode == 1, done.stderr
        assert f"batch {batch.name} is finished: no engine runs it (`{verb[0]}` steers" in done.stderr, done.stderr
        assert "resume" not in done.stderr  # it would do nothing


def test_an_offline_retry_names_the_batch_to_resume_and_resume_counts_what_is_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "older.txt").write_text("".join(f"{i}\n" for i in range(10)))
    (tmp_path / "newer.txt").write_text("x\n")
    older = invoke_in_process(["run", "older.txt", "--cmd", "[ {} -gt 1 ]", "--headless"], out=out, cwd=tmp_path)
    assert older.returncode == 1, older.stderr
    (old_batch,) = [p for p in out.iterdir() if p.is_dir()]
    # A newer unfinished batch: a bare `batchtui resume` would take it.
    newer = invoke_in_process(["run", "newer.txt", "--cmd", "kill -INT $$", "--headless"], out=out, cwd=tmp_path)
    assert newer.returncode != 0
    retried = invoke_in_process(["retry", old_batch.name], out=out, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    hint = (retried.stdout + retried.stderr).split("run them with `", 1)[1].split("`", 1)[0]
    words = shlex.split(hint)
    assert words[:3] == ["batchtui", "resume", old_batch.name], hint
    again = invoke_in_process([*words[1:], "--headless"], out=out, cwd=tmp_path)
    assert f"resuming batch {old_batch.name}: 8/10 done" in again.stderr, again.stderr


def test_resume_retry_failed_counts_the_requeued_items_as_not_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "items.txt").write_text("".join(f"{i}\n" for i in range(10)))
    made = invoke_in_process(["run", "items.txt", "--cmd", "[ {} -gt 1 ]", "--headless"], out=out, cwd=tmp_path)
    assert made.returncode == 1, made.stderr
    batch = only_batch(out)
    again = invoke_in_process(["resume", batch.name, "--retry-failed", "--headless"], out=out, cwd=tmp_path)
    assert "requeued 2 failed items" in again.stderr
    assert f"resuming batch {batch.name}: 8/10 done" in again.stderr, again.stderr
