"""User-facing errors.

Every failure the user can cause or fix (a bad model, an unsupported op, a model that does not
fit the target, a bad argument) raises a subclass of :class:`FlexiganError`. The command line
catches this one class and prints its message as one line; anything else is a bug and keeps its
traceback.
"""


class FlexiganError(Exception):
    """A failure the user can act on; its message is one complete line."""


class ModelError(FlexiganError):
    """The ONNX file cannot be read, is malformed, or is inconsistent."""


class UnsupportedError(FlexiganError):
    """The model uses operators (or operator variants) that flexigan does not support.

    Parameters
    ----------
    problems : list of (str, str, str)
        ``(node_name, op_type, reason)`` for every unsupported node, all reported at once.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        listed = "; ".join(f"{name} ({op}): {why}" for name, op, why in self.problems)
        super().__init__(f"unsupported: {len(self.problems)} node(s): {listed}")


class FitError(FlexiganError):
    """The model does not fit the chosen accelerator configuration."""


class UsageError(FlexiganError):
    """A bad command-line argument or output location."""


class FolderError(FlexiganError):
    """A compiled folder is missing a file, holds one that changed since its compile, or holds
    one that does not parse."""
