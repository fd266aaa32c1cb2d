"""Errors meant for the user: printed as one line by the entry points, never as a traceback wall."""


class MmsentiError(ValueError):
    """A problem the user can fix (bad path, bad file, mismatched checkpoint); the message says how."""
