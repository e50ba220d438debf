"""User errors: anticipated mistakes shown as one line, never as a traceback.

Library code raises `UserError` (or a subclass) with a message that names the file or the
configuration field and says how to fix it. Entry points wrap their work in
`exit_on_user_error`, which prints `error: <message>` on stderr and exits with status 2;
`debug=True` (the `--debug` flag) re-raises instead, so the traceback is there on demand.
Anything that is not a `UserError` is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An anticipated mistake of the user (bad file, bad option, bad data)."""


def exit_on_user_error(fn: Callable[[], T], *, debug: bool = False) -> T:
    """Runs `fn()`; on a `UserError` prints one line and exits with status 2 (unless debug)."""
    try:
        return fn()
    except UserError as e:
        if debug:
            raise
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
