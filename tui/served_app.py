"""The app process of one browser tab of ``batchtui serve`` (textual-serve starts it, with its
web driver in TEXTUAL_DRIVER): the dashboard of one batch, or the browser of every batch.

It never runs an engine (a resume starts a background one) and, unless ``--allow-control``,
refuses every key that changes a batch. Not a verb: ``batchtui serve`` builds its command line
(tui/serve.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batchtui.engine.batches import BatchScope


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batchtui.tui.served_app", description=__doc__)
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--only", action="store_true", help="that folder's batches alone")
    parser.add_argument("--batch", type=Path, help="the batch whose dashboard opens (else the browser)")
    parser.add_argument("--allow-control", action="store_true")
    parser.add_argument("--theme")
    args = parser.parse_args(argv)

    from .app import BatchtuiApp  # textual: only once the arguments are good

    app = BatchtuiApp(
        output_dir=BatchScope(args.output_dir, only=args.only),
        batch=args.batch,
        theme=args.theme,
        handle_hangup=False,  # no terminal: textual-serve ends the process when the tab closes
        ascii_only=False,  # the page's terminal (xterm.js) draws every glyph
        read_only=not args.allow_control,
        served=True,
    )
    return app.run() or 0


if __name__ == "__main__":
    sys.exit(main())
