"""The allocator scope nests, works as a decorator, and is fully undone when the outermost block ends."""

from __future__ import annotations

import pytest

import segcore._allocator as alloc
from segcore._allocator import retained_heap


@pytest.mark.skipif(alloc._glibc() is None, reason="needs glibc")
def test_nested_scopes_and_decorator_restore_the_defaults():
    seen = []

    @retained_heap()
    def work():
        seen.append(alloc._depth)
        with retained_heap():
            seen.append(alloc._depth)
            buf = bytearray(64 * 1024 * 1024)  # a block glibc would otherwise mmap and hand back
            del buf

    work()
    work()
    assert seen == [1, 2, 1, 2]
    assert alloc._depth == 0


def test_exceptions_leave_no_scope_open():
    with pytest.raises(RuntimeError):
        with retained_heap():
            raise RuntimeError("boom")
    assert alloc._depth == 0


def test_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("SEGCORE_KEEP_ALLOCATOR", "1")
    with retained_heap():
        assert alloc._depth == 0
