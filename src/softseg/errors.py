"""Exceptions that carry a message meant for the user.

The command line turns a :class:`SoftsegError` into one line on stderr and exit code 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class SoftsegError(Exception):
    """A problem with the user's input, files or settings; the message says what to do."""


class DatasetError(SoftsegError):
    """One or more problems found in a dataset; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], header: str = "dataset has problems"):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{header} ({len(self.problems)}):\n{lines}")
