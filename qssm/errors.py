"""One error type for everything a user can get wrong: the CLI prints it as one line and exits 2."""


class QssmError(Exception):
    """A problem with the user's input or environment, with a message that names the fix."""
