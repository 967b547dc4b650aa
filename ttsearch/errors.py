"""One base class for every error a user can fix: the CLI prints these as one line, and only these.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TTSearchError(Exception):
    """Bad input or a state the user can act on; the message names the file, line, key or value."""
