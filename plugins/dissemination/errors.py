"""Errors that retrying cannot fix: the DAGs fail these at once instead of retrying.

This module imports nothing, so DAG files can name ``PermanentError`` in a retry policy at parse
time without pulling in pandas, paramiko or Great Expectations.
"""


class PermanentError(Exception):
    """A failure caused by data, policy or configuration: a retry would fail the same way."""
