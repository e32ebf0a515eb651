"""The one error type that user mistakes raise.

A `UserError` carries a one-line message meant for the person at the keyboard.
The CLI turns it into `error: <message>` on stderr and exit code 2, with no
traceback; the explorer shows it in the UI. Anything else is a bug.
"""


class UserError(Exception):
    """Bad input from the user: unknown names, missing files, corrupt or mismatched run folders."""

    def __init__(self, message: str):
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))
