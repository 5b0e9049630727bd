"""Screenshot a training run's plots as the MLflow UI shows them, in headless Chromium.

    python benchmarks/screenshot_run.py --tracking-uri sqlite:///mlflow.db [--run-id ID] \
        [--artifact plots/interval_coverage_runtime_ms.png] [--out run.png]

Starts ``mlflow ui`` on 127.0.0.1 (a free port) over the tracking store, opens the run's artifact view of
``--artifact`` (default: every ``plots/*.png`` of the run, one screenshot each) and saves what the browser
drew. Why a browser: a plot that is logged but that the run page cannot render (wrong type, broken path) is
invisible to ``list_artifacts``. Needs Debian's ``chromium`` (``apt-get install -y chromium``). The run
defaults to the store's most recent finished run that logged plots.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow

STARTUP_S = 120
#: flags that keep Chromium from reaching the network or a GPU: only the local UI is loaded
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_run_with_plots(client: mlflow.MlflowClient) -> mlflow.entities.Run:
    """The most recent finished run of any experiment that logged a ``plots/`` folder."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiments, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]):
        if client.list_artifacts(run.info.run_id, "plots"):
            return run
    raise SystemExit("no finished run with plots in this tracking store; train one first (perfcast train CONFIG)")


def start_server(cmd: list[str], health_url: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run ``cmd`` (a server, in its own process group, output to ``log``) until ``health_url`` answers."""
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd[:4])} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(health_url, timeout=2):
                return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{' '.join(cmd[:4])} did not answer {health_url} within {STARTUP_S} s")


def stop(proc: subprocess.Popen) -> None:
    """End the server's whole process group (SIGTERM, then SIGKILL after 20 s)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def screenshot(url: str, out: Path, browser: str) -> Path:
    """What headless Chromium draws at ``url`` after the page's scripts ran, as a PNG at ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="perfcast-chromium-") as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out.resolve()}", url],
                       check=True, capture_output=True, timeout=180)
    if not out.is_file():
        raise SystemExit(f"chromium wrote no screenshot for {url}")
    return out


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    ap.add_argument("--run-id", help="run to show [default: the latest finished run with plots]")
    ap.add_argument("--artifact", action="append", help="artifact path to show (repeatable) [default: plots/*.png]")
    ap.add_argument("--out", type=Path, default=Path("run-screenshots"),
                    help="PNG file (one artifact) or directory (one PNG per artifact)")
    args = ap.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")

    client = mlflow.MlflowClient(args.tracking_uri)
    run = client.get_run(args.run_id) if args.run_id else latest_run_with_plots(client)
    artifacts = args.artifact or [a.path for a in client.list_artifacts(run.info.run_id, "plots")
                                  if a.path.endswith(".png")]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="perfcast-ui-") as tmp:
        proc = start_server([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.tracking_uri, "--host",
                             "127.0.0.1", "--port", str(port)], f"http://127.0.0.1:{port}/health", Path(tmp) / "ui.log")
        try:
            shots = []
            for path in artifacts:
                url = f"http://127.0.0.1:{port}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts/{path}"
                out = args.out if args.out.suffix == ".png" and len(artifacts) == 1 else args.out / Path(path).name
                shots.append(screenshot(url, out, browser))
                print(f"{url} -> {out}")
        finally:
            stop(proc)
    return shots


if __name__ == "__main__":
    main()
