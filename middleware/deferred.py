"""Typed asynchronous code on Twisted: coroutines that callers receive as Deferreds.

Twisted code is written as ``async def`` so that mypy checks it (an ``@inlineCallbacks``
generator is typed ``-> Any`` and checked not at all). A coroutine that other code calls the
way it calls any Twisted API (``addCallback``, ``yield`` in a test, a service's
``startService``) is decorated with `deferred`: calling it starts the coroutine at once and
gives a ``Deferred`` of its result, as ``@inlineCallbacks`` did, with the types kept.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

__all__ = ["deferred", "fire"]

P = ParamSpec("P")
T = TypeVar("T")


def deferred(function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Make a coroutine function return a ``Deferred`` of its result (started at once)."""

    @wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(function(*args, **kwargs))

    return run


def fire(waiter: Deferred[None]) -> None:
    """Wake whoever waits on ``waiter`` (once: a waiter fired already is left alone)."""
    if not waiter.called:
        waiter.callback(None)
