"""pytest configuration: trial ``TestCase``s first, pytest-twisted's tests after them.

Trial's ``TestCase`` runs the reactor itself for each asynchronous test (and checks it is
clean afterwards); pytest-twisted runs it once, in a greenlet, from the first plain test
function on (``pytest_twisted.ensureDeferred``/``inlineCallbacks``) until the session ends.
Once that greenlet holds the reactor, trial can no longer spin it, and every later
asynchronous ``TestCase`` fails with an unclean reactor.  So the plain test functions run
after every ``TestCase`` (a stable sort: each group keeps its order).  ``trial tests``
never reads this file.
"""

from __future__ import annotations

import unittest

import pytest


def _is_unittest_case(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    return cls is not None and issubclass(cls, unittest.TestCase)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not _is_unittest_case(item))
