"""The one exception type for bad user input."""


class InputError(ValueError):
    """Bad input from the user.

    The message names the offending file, array or argument, says what is wrong and what to
    do about it. The CLI prints it without a traceback and exits with status 2.
    """
