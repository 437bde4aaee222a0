"""A --call processor for the drop tests: 0.2 s of Python per item, on the thread executor."""

from __future__ import annotations

import time
from typing import Any


def work(item: Any) -> dict[str, int]:
    time.sleep(0.2)
    return {"seq": item.seq}
