"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class InputError(ValueError):
    """Bad user input (axis list, dtype, tp, config). The message is the whole story."""


class NotEnoughGpus(InputError):
    """The run needs more GPUs than this machine has: a sweep skips it (and says so) instead of stopping."""
