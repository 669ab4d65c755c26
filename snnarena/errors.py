"""The one base class of everything a user can get wrong, and the command's exit codes.

Every error a user can fix by changing their input — a suite file, a plugin parameter, a plugin
name, an ``--only`` selector, a run directory, an output folder, a missing data file — derives
from :class:`SnnarenaError`. The command line catches this one class, once, and prints its message
(which names the file or key at fault and what to do) without a traceback; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

#: Exit codes of the ``snnarena`` command.
EXIT_OK = 0
#: A run finished but at least one cell failed (each is listed with its traceback file); also
#: ``compare --fail-on-regression`` when run B is worse than run A.
EXIT_FAILED = 1
#: The input was wrong (:class:`SnnarenaError`): nothing ran, or the run stopped before a cell.
EXIT_USAGE = 2
#: Interrupted (Ctrl-C or SIGTERM); every finished cell is on disk, ``--resume`` continues.
EXIT_INTERRUPTED = 130


class SnnarenaError(Exception):
    """Something the user can fix: the message says what is wrong, where, and what to do."""


class ConfigurationError(SnnarenaError):
    """A setting that cannot work (a device that is not there, an option out of range ...)."""


class RunDirectoryError(SnnarenaError):
    """A run directory that cannot be used as asked (missing, damaged, locked, or a mismatch)."""


class OutputLocationError(SnnarenaError):
    """A folder results or reports must be written to that is not writable (or is full)."""


class DataFilesError(SnnarenaError):
    """A dataset's files are missing or damaged; the message names the files and where to get them."""


class WorkerStopped(BaseException):
    """The worker running a cell is being taken away by its scheduler (a preempted cluster job).

    Not an error of the cell: it passes through the cell's and the metrics' error handling (which
    record any other exception as the cell's failure), so the executor can requeue the cell, which
    then runs again from its start. A ``BaseException``, like ``KeyboardInterrupt``."""
