"""The one exception type the CLI reports as a single line (full traceback with --debug)."""


class TinydiffError(Exception):
    """A problem with the user's input or environment, explained in one line."""
