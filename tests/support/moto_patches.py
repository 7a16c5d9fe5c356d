"""Installing test-only replacements on moto's in-process classes, and taking them out again.

moto runs inside the test process (`ThreadedMotoServer`), so a request handler is an ordinary
method on a response class and a service's state is an ordinary object in a backend dict.
The stand-ins replace a few handler methods and keep their extra state on moto's backend
objects, so that anything that resets moto (`/moto-api/reset`) resets them too.

These are moto 5.x internals. `require_moto_5` refuses other major versions at once, with a
clear message, instead of letting tests fail in odd ways; the stand-ins' self-tests
(tests/standins/) are what shows a moto upgrade kept them working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import moto

__all__ = ["Patches", "as_handler", "backend_state", "ec2_backend", "require_moto_5"]

SUPPORTED_MAJOR = 5
T = TypeVar("T")


def require_moto_5() -> None:
    """Refuse a moto whose internals the stand-ins were not written against."""
    major = int(str(moto.__version__).split(".", 1)[0])
    if major != SUPPORTED_MAJOR:
        raise RuntimeError(
            f"the AWS stand-ins patch moto {SUPPORTED_MAJOR}.x internals, found moto "
            f"{moto.__version__}; check tests/support/ against the new moto and update them"
        )


class Patches:
    """Attribute replacements on classes (or modules), installed one by one and undone all
    together."""

    def __init__(self) -> None:
        # (owner, name, previous value, whether the owner itself defined it)
        self._saved: list[tuple[object, str, object, bool]] = []

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def replace(self, owner: object, name: str, value: object) -> None:
        own = name in vars(owner)
        self._saved.append((owner, name, vars(owner).get(name), own))
        setattr(owner, name, value)

    def undo(self) -> None:
        """Put every replaced attribute back (inherited ones become inherited again)."""
        for owner, name, previous, own in reversed(self._saved):
            if own:
                setattr(owner, name, previous)
            else:
                delattr(owner, name)
        self._saved.clear()


def as_handler(method: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A plain function calling `method` (a bound method or closure): moto looks a request's
    handler up among the class's functions (inspect.isfunction), so it must be one."""

    def handler(response: Any) -> Any:
        return method(response)

    return handler


def ec2_backend(account_id: str, region: str) -> Any:
    """moto's EC2 backend for one account and region (created on first use)."""
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region]


def backend_state(backend: Any, name: str, factory: Callable[[], T]) -> T:
    """Extra state the stand-ins keep on a moto backend object, made on first use.

    Kept on the backend (not in the stand-in) so that a moto reset, which replaces the
    backend objects, drops it as well.
    """
    state = backend.__dict__.get(name)
    if state is None:
        state = factory()
        backend.__dict__[name] = state
    return state  # type: ignore[no-any-return]
