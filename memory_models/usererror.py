"""The one exception type for a user's mistake (bad file, unknown name, impossible value).

The CLI turns it into a single line on stderr and exit status 2, never a traceback.
Every package raises it (or a subclass) for input the user controls; genuine bugs stay
ordinary exceptions so they still show a traceback.
"""

from __future__ import annotations

from os import PathLike


class UserInputError(ValueError):
    """A user's input is wrong; the message names the source, the field and the fix.

    source: the file, profile name or command-line option the bad input came from.
    field:  the key, column or argument inside it (may be empty).
    problem: what is wrong, in a few words.
    fix:    what to do about it.
    """

    def __init__(
        self,
        source: str | PathLike[str] | None,
        field: str | None,
        problem: str,
        fix: str | None = None,
    ) -> None:
        self.source = "" if source is None else str(source)
        self.field = field or ""
        self.problem = problem
        self.fix = fix or ""
        super().__init__(self.line())

    def line(self) -> str:
        """One line: 'SOURCE: field FIELD: PROBLEM; fix: FIX'."""
        parts = []
        if self.source:
            parts.append(f"{self.source}:")
        if self.field:
            parts.append(f"field '{self.field}':")
        parts.append(self.problem)
        text = " ".join(parts)
        if self.fix:
            text += f"; fix: {self.fix}"
        return text.replace("\n", " ")
