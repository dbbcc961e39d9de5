"""The one exception type that the command line reports as a plain one-line user error."""


class AsymretError(ValueError):
    """Bad input or configuration: the message names the file or value and the problem."""
