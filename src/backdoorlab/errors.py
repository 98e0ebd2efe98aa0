"""User-facing errors.

Anything a user can cause (bad file, unknown name, impossible budget, mismatched checkpoint) raises
:class:`BackdoorlabError` with a one-line message that names the problem. The CLI prints that line and exits
with status 2; it never shows a traceback for these.
"""


class BackdoorlabError(Exception):
    """An error caused by the user's input, with a one-line message meant to be shown as it is."""


def valid_names(names) -> str:
    """Format a list of valid names for an error message: ``'a', 'b', 'c'``."""
    return ", ".join(repr(n) for n in sorted(names))


def first_line(error: BaseException, with_type: bool = False) -> str:
    """The first line of another library's exception message, to quote it in one of ours (the exception's type
    name when the message is empty); ``with_type``: prefixed by that name, ``ValueError: ...``."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text.splitlines()[0]}" if with_type else text.splitlines()[0]
