"""The one exception type users see: a clear message naming the file and what is wrong."""

from __future__ import annotations


class SongtraceError(Exception):
    """A user-facing error: bad input, a mismatched artifact, a missing file.

    The CLI prints its message without a traceback; library callers can catch it.
    """
