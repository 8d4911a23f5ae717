"""Errors that tell the user what is wrong, where, and how to fix it."""

from __future__ import annotations


class TesseraError(Exception):
    """Base class of every error tessera raises on purpose."""


class InputError(TesseraError):
    """A user-supplied input (sheet, config, reference file) is invalid.

    The message names the file, the line (1-based, header = line 1) and the field where known,
    and ends with the fix.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem, self.file, self.line, self.field, self.fix = problem, file, line, field, fix
        where = ", ".join(
            part
            for part in (
                str(file) if file else "",
                f"line {line}" if line is not None else "",
                f"field '{field}'" if field else "",
            )
            if part
        )
        message = f"{where}: {problem}" if where else problem
        super().__init__(f"{message}. Fix: {fix}" if fix else message)


class InputErrors(InputError):
    """Several problems found in one or more inputs, reported together so one pass fixes them all
    (at most ``limit`` shown per file, so one long list does not hide another file's)."""

    def __init__(self, file: str, errors: list[InputError], limit: int = 20) -> None:
        self.errors = errors
        counts: dict = {}
        lines = []
        for e in errors:
            counts[e.file] = counts.get(e.file, 0) + 1
            if counts[e.file] <= limit:
                lines.append(str(e))
        shown = "\n  ".join(lines)
        more = f"\n  ... and {len(errors) - len(lines)} more" if len(errors) > len(lines) else ""
        TesseraError.__init__(self, f"{len(errors)} problem(s) in {file}:\n  {shown}{more}")
        self.problem, self.file, self.line, self.field, self.fix = str(self), file, None, None, None


class SlideError(TesseraError):
    """One slide cannot be processed; recorded as failed with this reason, the cohort goes on."""
