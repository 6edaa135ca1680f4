"""The one exception type for a user's mistake (bad file, unknown name, impossible value).

The CLI turns it into a single line on stderr and exit status 2, never a traceback.
Every package raises it (or a subclass) for input the user controls; genuine bugs stay
ordinary exceptions so they still show a traceback.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path


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


def _writable_folder(folder: Path, option: str, what: str) -> None:
    """UserInputError unless files can be created in `folder` (tried, not guessed: root
    passes permission checks on read-only file systems)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserInputError(option, None, f"cannot write {what} in folder {str(folder)!r} "
                             f"({err.strerror or err})",
                             f"pass a writable location to {option}") from None  # fmt: skip


def _existing_ancestor(path: Path, option: str) -> Path:
    """The nearest folder above `path` that exists (a file there is an error)."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise UserInputError(option, None, f"{str(parent)!r} is a file, not a folder, so "
                             f"{str(path)!r} cannot be created",
                             f"pass a path inside a folder to {option}")  # fmt: skip
    return parent


def check_output_file(
    path: str | PathLike[str], option: str, *, create_folders: bool = False
) -> Path:
    """Check, before any work, that a file can be written at `path` (given as `option`).

    Refused: a path that is a folder, a missing parent folder (unless `create_folders`: then
    the nearest existing one must be writable and the caller creates the rest), a parent
    that is a file, a folder without write permission, an existing file that is read-only.
    """
    p = Path(path)
    if p.is_dir():
        raise UserInputError(option, None, f"{str(path)!r} is a folder, not a file name",
                             f"pass a file name to {option}, e.g. {p / 'out'}")  # fmt: skip
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise UserInputError(option, None, f"{str(parent)!r} is a file, not a folder",
                             f"pass a path inside a folder to {option}")  # fmt: skip
    if not parent.exists():
        if not create_folders:
            raise UserInputError(option, None, f"folder {str(parent)!r} does not exist",
                                 f"create it first or pass another {option}")  # fmt: skip
        parent = _existing_ancestor(p, option)
    _writable_folder(parent, option, "a file")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserInputError(option, None, f"{str(p)!r} is read-only",
                             f"make it writable or pass another {option}")  # fmt: skip
    return p


def check_output_folder(path: str | PathLike[str], option: str) -> Path:
    """Check, before any work, that `path` is or can become a writable folder (missing
    folders are created by the caller)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserInputError(option, None, f"{str(p)!r} exists and is not a folder",
                             f"pass a folder name to {option}")  # fmt: skip
    _writable_folder(p if p.is_dir() else _existing_ancestor(p, option), option, "files")
    return p
