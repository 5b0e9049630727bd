"""perfcast: predict runtime and power of GEMM, attention and CPU benchmarks on hardware you have not run."""

from perfcast.datasets.store import RecordStore

__version__ = "0.1.0"


def load_dataset(task: str, store: str | None = None):  # noqa: ANN201  (pandas DataFrame)
    """Every stored record of ``task`` as one DataFrame (``store`` defaults to ``$PERFCAST_STORE``)."""
    return RecordStore(store).read(task)


def __getattr__(name: str):  # noqa: ANN202
    """``perfcast.Predictor`` on first use: importing it loads the model libraries, which ``perfcast --help``
    and the data commands do not need."""
    if name == "Predictor":
        from perfcast.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'perfcast' has no attribute {name!r}")


__all__ = ["Predictor", "RecordStore", "__version__", "load_dataset"]
