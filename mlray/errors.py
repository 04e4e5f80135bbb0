"""User-facing errors.

Every problem with the user's input (a config, a label file, a prediction file, an image) is raised as
:class:`MlrayError` with a one-line message that names the file (and row / key / entry) and says what is
wrong. The CLI prints the message and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations


class MlrayError(Exception):
    """An error in the user's input, with a one-line message naming the file and the offending entry."""


def where(path: object, detail: str | None = None) -> str:
    """Format a location for an error message: ``file`` or ``file: detail``."""
    return f"{path}: {detail}" if detail else str(path)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty.

    >>> first_line(ValueError("bad value\\nmore detail"))
    'bad value'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
