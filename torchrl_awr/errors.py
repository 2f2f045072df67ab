"""Turning an exception into the one line a user reads (the scripts end every failure in one line, exit 2)."""

from __future__ import annotations


def one_line(err: BaseException, limit: int = 200) -> str:
    """``"<Type>: <first line of its message>"``, cut to ``limit`` characters.

    Examples:
        >>> one_line(ValueError("bad shape\\n  (a long explanation)"))
        'ValueError: bad shape'
        >>> one_line(KeyError())
        'KeyError'
    """
    text = str(err).strip().splitlines()
    return (f"{type(err).__name__}: {text[0]}" if text else type(err).__name__)[:limit]
