"""What every importer provides, and the registry that maps dataset names to importers.

An importer turns a directory laid out like the shared copy of one public dataset into validated
records. It splits its work into *units* (usually files) so the CLI can show progress and so a copy with
more devices or years imports the same way: units are discovered by globbing, never listed by hand.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from perfcast.records.parsing import TEXT_SUFFIXES, DataFileError, check_text_file
from perfcast.records.schema import SchemaError
from perfcast.records.store import AppendResult, RecordStore

REGISTRY: dict[str, type["Importer"]] = {}


def register(name: str) -> Callable[[type["Importer"]], type["Importer"]]:
    """Class decorator: make an importer available as ``perfcast data import NAME``."""

    def deco(cls: type[Importer]) -> type[Importer]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


class DatasetLayoutError(ValueError):
    """The directory does not look like the dataset (says what was expected where)."""


class Importer(ABC):
    """Base class: ``units(root)`` lists the work, ``load(root, unit)`` turns one unit into records."""

    name: str = ""
    #: one line for ``perfcast data import --help``
    description: str = ""
    #: text units must end with a newline (a file cut mid-row does not); False for sources published without
    final_newline: bool = True

    @abstractmethod
    def units(self, root: Path) -> list[Path]:
        """The files (or sub-directories) under ``root`` to import; raise DatasetLayoutError if none."""

    @abstractmethod
    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        """Records of one unit, keyed by task. Frames need not be validated yet (the store does it)."""

    def check_files(self, root: Path, units: list[Path]) -> None:
        """Check every text unit is whole (see :func:`~perfcast.records.parsing.check_text_file`) before
        anything is stored, so a damaged file anywhere in the dataset stores nothing."""
        for unit in units:
            if unit.is_file() and unit.name.endswith(TEXT_SUFFIXES):
                check_text_file(unit, self.name, final_newline=self.final_newline)

    def run(
        self,
        root: str | Path,
        store: RecordStore,
        on_unit: Callable[[Path, list[AppendResult]], None] | None = None,
    ) -> list[AppendResult]:
        """Import every unit under ``root`` into ``store``; ``on_unit`` is called after each (progress).

        Every error names its file: a missing or damaged file (checked for all units first, storing
        nothing) is a :class:`DatasetLayoutError` or :class:`~perfcast.records.parsing.DataFileError`;
        rows that fail validation are a :class:`~perfcast.records.schema.SchemaError` and store nothing
        of their file (complete files imported before it are kept; a re-run skips them).
        """
        root = Path(root)
        if not root.is_dir():
            what = "is not a directory" + ("" if root.exists() else " (it does not exist)")
            raise DatasetLayoutError(f"{self.name}: {root} {what}; pass the directory holding the {self.name} dataset")
        units = self.units(root)
        self.check_files(root, units)
        results: list[AppendResult] = []
        for unit in units:
            try:
                frames = self.load(root, unit)
            except (SchemaError, DatasetLayoutError, DataFileError) as e:
                e.add_note(f"while importing {unit} ({self.name})")
                raise
            except Exception as e:  # any reader failure on a damaged file: name the file, not a traceback
                raise DataFileError(f"{self.name}: {unit} cannot be read ({type(e).__name__}: {e}); replace it "
                                    f"with an intact copy of the {self.name} dataset and import again") from e
            try:
                res = [store.append(df, task) for task, df in frames.items() if len(df)]
            except SchemaError as e:
                e.add_note(f"while importing {unit} ({self.name})")
                raise
            results.extend(res)
            if on_unit is not None:
                on_unit(unit, res)
        return results


def require(paths: Iterable[Path], root: Path, what: str, name: str) -> list[Path]:
    """Sorted list of ``paths``, or an DatasetLayoutError naming what was expected under ``root``."""
    found = sorted(paths)
    if not found:
        raise DatasetLayoutError(f"{name}: no {what} found under {root}; is this a copy of the {name} dataset?")
    return found
