"""The base of batchtui's pydantic models: validators built at first use, whole, under held signals.

pydantic builds a model's validator (a ``SchemaValidator``, in Rust) when the class is defined,
or, with ``defer_build``, the first time the model is used. Python code runs inside that build
(an enum's ``__hash__``, for one), and a Ctrl-C that comes meanwhile raises its
KeyboardInterrupt there, inside pydantic-core, which does not pass it on: it either drops it
(the Ctrl-C did nothing) or reports it as a ``SchemaError`` about a field ("Error building
literal validator: KeyboardInterrupt"). A Ctrl-C at the moment ``run`` built its manifest model
ended the command with that traceback and exit 1, and left the half-made batch behind (a
SchemaError is a crash, not an interrupt, to create_batch).

So every model here is built lazily (``defer_build``: a command builds only the models it uses,
which is also what keeps its start-up short), and the build runs inside
:func:`~batchtui.engine.interrupts.held_signals`: a signal that comes meanwhile reaches its
handler once the validator is complete, as the KeyboardInterrupt the CLI turns it into, and
the model works for whoever uses it next. A build takes milliseconds; the hold is only for it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .interrupts import held_signals

__all__ = ["Model"]


class Model(BaseModel):
    """A pydantic model whose validator is built at first use, with signals held meanwhile."""

    model_config = ConfigDict(defer_build=True)

    @classmethod
    def model_rebuild(
        cls,
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Any = None,
    ) -> bool | None:
        """pydantic's, whole: the first use of a deferred model comes here (pydantic's
        placeholder validator calls it), as does an explicit rebuild."""
        with held_signals():
            return super().model_rebuild(
                force=force,
                raise_errors=raise_errors,
                # this frame is one more between the caller and pydantic's own
                _parent_namespace_depth=_parent_namespace_depth + 1,
                _types_namespace=_types_namespace,
            )
