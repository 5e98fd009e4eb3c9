"""One exception family for the harness.

Every error a user can cause (a typo in a name, a bad config key, a missing dataset
or weight file) is a ``BenchError`` whose message says what was wrong and what is
valid, so the fix is in the message. Runtime outcomes that become result rows
(divergence) are also ``BenchError`` subclasses so the runner can classify them.
"""

from __future__ import annotations


class BenchError(Exception):
    """Base class of every error the harness raises on purpose."""


class UnknownName(BenchError, LookupError):
    """A method, model, dataset or tier name that is not registered."""


class DuplicateName(BenchError, ValueError):
    """A second registration under a name that is already taken."""


class InvalidConfig(BenchError, ValueError):
    """A config key that does not exist, or a value of the wrong type or range."""


class InvalidGrid(BenchError, ValueError):
    """A suite grid that cannot be expanded into valid cells."""


class DatasetNotFound(BenchError, FileNotFoundError):
    """A dataset whose files are not where the harness was told to look."""


class WeightsNotFound(BenchError, FileNotFoundError):
    """Source weights that are not cached and may not be downloaded."""


class DeviceUnavailable(BenchError, RuntimeError):
    """The requested device does not exist here; the cell is recorded as ``skipped``."""


class Diverged(BenchError, FloatingPointError):
    """Training produced a non-finite loss, or the fitted model a non-finite evaluation score
    (``step`` -1: a blow-up on the last steps); the cell is recorded as ``diverged``."""

    def __init__(self, step: int, value: float, stage: str = "train") -> None:
        self.step = step
        self.value = value
        self.stage = stage
        where = f"at step {step} of stage '{stage}'" if step >= 0 else f"in the {stage} after training"
        super().__init__(f"non-finite loss {value!r} {where}")


class InnerRunsDiverged(Diverged):
    """Every inner run a method needed diverged (all search trials, every proxy evaluation), or the
    one it cannot do without did, so the method cannot continue; the cell is recorded as
    ``diverged``. A single diverged inner run is data, not this error (``bench.engine.inner``)."""

    def __init__(self, message: str) -> None:
        self.step, self.value, self.stage = -1, float("nan"), "inner runs"
        BenchError.__init__(self, message)


class SelectorError(BenchError, LookupError):
    """A selector that names no run, or more than one; the message lists the candidates."""


class Incomparable(BenchError, ValueError):
    """The two sides differ in a comparability field (and ``--force`` was not given)."""


class InvalidReference(BenchError, ValueError):
    """A reference side that cannot gate anything: no rows, or a non-finite value in a gated metric."""


class ReferenceFileError(BenchError, ValueError):
    """A reference file that is missing, empty or malformed; the message names the cell and field."""


class ServeError(BenchError):
    """A database that cannot be served as asked (missing, not SQLite, not archbench, busy port)."""


class GateError(BenchError, ValueError):
    """Bad gate options or config file; the message lists what is valid."""


class ExportError(BenchError, ValueError):
    """An export that cannot be done as asked (unknown view, bad filter, parquet to stdout)."""


class StoreError(BenchError):
    """A store that cannot be used as asked (read-only, wrong schema version, ...)."""


class SchemaMismatch(StoreError, RuntimeError):
    """A database whose applied migrations differ from what this code expects."""


class NotABenchDatabase(StoreError, ValueError):
    """A file that is not a results database written by this harness."""


class DegenerateRanking(BenchError, ValueError):
    """A ranking with too few items or a constant side: no correlation is defined."""
