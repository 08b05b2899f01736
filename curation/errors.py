"""Own exception types. Each message names the file, row, field and the fix where there is one."""


class CurateError(Exception):
    """Base of every error the product raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code = 1


class InputError(CurateError, ValueError):
    """Bad input from the user: a file that cannot be read, an unknown dataset, a bad option."""

    exit_code = 2


class NotFound(CurateError, LookupError):
    exit_code = 2


class StoreLocked(CurateError):
    """Another process holds the DuckDB file for writing."""

    exit_code = 3


class SqlRefused(CurateError, PermissionError):
    """A user SQL statement the sandbox does not run."""

    exit_code = 2


class SqlLimit(CurateError):
    """A user SQL statement ran past the row or time limit."""

    exit_code = 2


class LeakageError(CurateError):
    """The split puts near-duplicate records in different splits."""

    exit_code = 4
