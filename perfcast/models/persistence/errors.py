"""Why a saved model was refused: its own module so the LightGBM reader (:mod:`perfcast.models.persistence.compiled`) and the
bundle loader (:mod:`perfcast.models.persistence.bundle`, which re-exports these) raise the same named errors without importing
each other."""

from __future__ import annotations


class IncompatibleModelError(RuntimeError):
    """The model was built with library versions (or a bundle format) this environment does not read; the
    message says which and what to install."""


class ModelFormatError(ValueError):
    """A path is not a perfcast model, a file of it is unreadable, or an estimator cannot be saved safely."""


class CorruptModelError(ModelFormatError):
    """A model file or the manifest fails a check (checksum, digest, required key, index range, tree shape): the
    model was damaged or edited after it was saved. The message names the file and what failed."""


__all__ = ["CorruptModelError", "IncompatibleModelError", "ModelFormatError"]
