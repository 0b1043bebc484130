"""The one base class of user-facing failures, and the errors more than one stage raises.

A `CurateError` is a failure a stage detects itself and can explain in one line: bad input, a missing
file, options that contradict each other. The `curate` group (curate.cli.StageGroup) turns any that
escapes a command into one line, `curate <cmd>: error: <message>`, and exits with its `exit_code`:

  2  the request is wrong (misuse, bad or missing input): like click's usage errors, the line ends
     with "(see 'curate <cmd> --help')";
  1  the request is fine but the world is not (the network is down): trying again later may work.

Bad *items* (an undecodable image, a malformed metadata line) are not errors: they are reason codes.
"""

from __future__ import annotations


class CurateError(Exception):
    """A user-facing failure with a one-line message that says what to do."""

    exit_code = 2


class InputError(CurateError):
    """An input path that cannot be used at all (missing, unreadable, the wrong kind of file)."""
