"""Shared fixtures: where the real public datasets live (beside the checkout, as in CI), and a PostgreSQL server."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist's workers start with COLUMNS=80 in their environment, where a serial run has none; rich fixes a
    # console's width from COLUMNS when the console is made (the CLI's, at import), so tests that widen the console
    # for one command (CliRunner's env) would get 80 columns only in a worker. Same output on both runners:
    os.environ.pop("COLUMNS", None)
    # Each worker's OpenMP pools (LightGBM, XGBoost, torch, OpenBLAS) sized to its share of the cores: by default each
    # takes every core, and with another worker busy their threads spin-wait at every barrier (a LightGBM test took
    # twice its single-thread time and CPU beside one busy process, benchmarks/TEST_TIME.md). Set before any test
    # module loads them (they read it once); inherited by the commands tests run; a value given by the caller wins.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``, ``--no-loadscope-reorder``): a module's tests run on one worker (an
    xdist group per module, unless a test names its own group), and modules holding a ``slow`` test go first.

    Why: a module-scoped fixture (an import of real data, a trained model) is built by every worker that runs one of
    the module's tests: split over both workers it was built twice, 10-25 s each for the largest. Slow modules first
    so the run ends on short tests: a two-minute test started last on one worker leaves the other idle."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {_module(item) for item in items if item.get_closest_marker("slow") is not None}
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(_module(item)))
    items.sort(key=lambda item: _module(item) not in slow)  # stable: each module's tests stay in their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under pytest-xdist, a ``quiet_core`` test runs while no other worker runs a test: every test holds a shared
    lock on one file of this run for its whole protocol (its fixtures' set-up and teardown too), a quiet-core test an
    exclusive one. Why: a timing test that needs a quiet core would otherwise always find the other worker busy."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield
        return
    exclusive = item.get_closest_marker("quiet_core") is not None
    with open(Path(tempfile.gettempdir()) / f"perfcast-pytest-{run}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared datasets directory; tests that need it fail loudly (not skip) if it is absent."""
    assert DATA_ROOT.is_dir(), f"shared datasets not found at {DATA_ROOT}"
    return DATA_ROOT


@pytest.fixture()
def store(tmp_path: Path):
    """An empty record store in a temporary directory."""
    from perfcast.records.store import RecordStore

    return RecordStore(tmp_path / "store")


@pytest.fixture(scope="session")
def new_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], str]:
    """``new_mlflow_db(directory)``: the URI of a new, empty MLflow SQLite store at ``directory/mlflow.db``.

    Why: MLflow creates a new SQLite store by running its schema migrations, seconds of CPU per file; each store
    here is a copy of one store migrated once per session, so every test still gets its own empty store."""
    import mlflow

    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{template}").search_experiments()  # creates and migrates the tables

    def make(directory: Path) -> str:
        target = Path(directory) / "mlflow.db"
        assert not target.exists(), f"{target} exists: a new store needs a directory without one"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"

    return make


# ------------------------------------------------------------------------------------------ PostgreSQL
def _initdb() -> Path | None:
    """The newest installed PostgreSQL's initdb (Debian lays each version out under /usr/lib/postgresql)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: ``$PERFCAST_TEST_PG_URL`` (what .ci/run starts), else a temporary cluster started
    here (initdb into a temporary directory, as the ``postgres`` user when run as root, listening on 127.0.0.1
    only) and stopped after the session. Skips only when PostgreSQL is not installed at all."""
    url = os.environ.get("PERFCAST_TEST_PG_URL")
    if url:
        yield url
        return
    initdb = _initdb()
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): `apt-get install -y "
                    "postgresql`, or point PERFCAST_TEST_PG_URL at a server")
    root = Path(tempfile.mkdtemp(prefix="perfcast-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    pg_ctl = str(initdb.parent / "pg_ctl")
    subprocess.run([*as_user, str(initdb), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def pg_database(pg_url: str, request: pytest.FixtureRequest) -> str:
    """A new, empty database on the :func:`pg_url` server for one test; its URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:40] + f"_{os.getpid()}_{int(time.time() * 1e3)}"
    engine = create_engine(make_url(pg_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)
