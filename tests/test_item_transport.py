"""An item travels to a pool worker (and a dask one) pickled, a chunk at a time: every field
arrives as it was sent, whatever it holds. Item pickles as a tuple of its fields (its own
``__reduce__``), half the cost of the dataclass' state dict each way."""

from __future__ import annotations

import dataclasses
import pickle
from multiprocessing.reduction import ForkingPickler

from batchtui.engine.shell.item import Item


def test_every_field_of_an_item_arrives_as_sent() -> None:
    defaults = Item(0, "", None, 1, "")
    # Each field differs from the default item's, so a field left out of the pickle shows.
    item = Item(7, "k\u00e9y", {"url": "https://x/\udcff", "n": [1, 2.5, None]}, 3, "/b/d\u00e9", "jsonl")
    for field in dataclasses.fields(Item):
        assert getattr(item, field.name) != getattr(defaults, field.name), field.name
    alone = pickle.loads(pickle.dumps(item))
    chunk = pickle.loads(bytes(ForkingPickler.dumps([item, item])))  # as a pool's feeder sends
    for back in (alone, *chunk):
        assert type(back) is Item
        assert dataclasses.asdict(back) == dataclasses.asdict(item)
    assert len(chunk) == 2


def test_an_item_pickles_as_its_fields_not_a_state_dict() -> None:
    item = Item(1, "k", "line", 2, "/b", "lines")
    assert item.__reduce__() == (Item, (1, "k", "line", 2, "/b", "lines"))
