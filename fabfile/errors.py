"""The one error of slony-migrate: what cannot go on, on which host, and how to fix
it."""

from __future__ import annotations


class StepError(Exception):
    """A step cannot go on. Names the host, the object and the fix.

    Every layer raises this; the task layer turns it into one line on stderr and exit
    code 1.
    """

    def __init__(self, host: str, message: str, fix: str = ""):
        self.host, self.message, self.fix = host, message, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.host}: {self.message}"
        return f"{text}; fix: {self.fix}" if self.fix else text
