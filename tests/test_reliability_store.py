"""Store unavailable: a Qdrant URL that does not answer is a clear error, quickly, never a hang.

Two ways of not answering: nothing listens (connection refused at once), and something listens
but never says a word (only a timeout ends the wait). Both for the engine (``StoreUnavailable``)
and for the command line (a non-zero exit and one line on stderr).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from engine.errors import StoreUnavailable
from engine.model_info import ModelInfo
from engine.settings import StoreSettings
from engine.store import open_store
from tests.conftest import REPO

INFO = ModelInfo("snapshop-lit-fashion", "1-test", 8)


@pytest.fixture(scope="module")
def silent_server():
    """A socket that accepts connections (the kernel does) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture(scope="module")
def closed_port():
    """A port nothing listens on: connections are refused at once."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


def test_a_server_that_accepts_but_never_answers_is_unavailable_after_the_timeout(silent_server):
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"the Qdrant server at {silent_server} does not answer"):
        open_store(StoreSettings(url=silent_server, timeout_s=1), INFO)
    # A bound that tells "answers after its timeout" from "hangs", with room for a loaded machine.
    assert time.monotonic() - started < 20


def snapshop(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> tuple[int, str, str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOP_")}
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "snapshop", *args], cwd=REPO.parent, capture_output=True,
                              text=True, env={**clean, **(env or {})}, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`snapshop {' '.join(args)}` hung for {timeout_s} s")
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


@pytest.fixture(scope="module")
def model_load_s(tmp_path_factory) -> float:
    """What the CLI takes to load the model and open a store when the store is there: the cost
    every failing run below pays before it can reach the store, measured on this machine."""
    store = tmp_path_factory.mktemp("empty") / "store"
    code, _, err, seconds = snapshop("search", "--text", "shirt", "--store", str(store))
    assert code != 0 and "is empty" in err
    return seconds


@pytest.mark.parametrize("command, kind", [("search", "refused"), ("search", "silent"), ("ingest", "silent")])
def test_the_cli_answers_a_store_that_does_not_answer_with_one_error_line_and_a_non_zero_exit(
        kind, command, closed_port, silent_server, model_load_s, tmp_path):
    url = closed_port if kind == "refused" else silent_server
    code, out, err, seconds = _unavailable(command, url, tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and out == ""
    assert len(errors) == 1 and errors[0].startswith(f"error: the Qdrant server at {url} does not answer: ")
    assert "Traceback" not in err
    # The model loads first; after that the answer comes at once (refused) or after the 2 s timeout.
    # A hang is caught by snapshop()'s 120 s limit; this bound tells "used the 2 s timeout" from
    # "waited on a longer default", with room for a machine whose load changed since model_load_s.
    assert seconds < 2 * model_load_s + 20, f"{seconds:.1f} s, where loading the model takes {model_load_s:.1f} s"


def test_the_cli_prints_nothing_but_its_one_error_line_for_a_silent_server(silent_server, model_load_s, tmp_path):
    code, _, err, _ = _unavailable("search", silent_server, tmp_path)
    assert code != 0 and [line for line in err.splitlines() if line.strip()] == [err.strip()]


_RUNS: dict[tuple[str, str], tuple[int, str, str, float]] = {}


def _unavailable(command, url, folder):
    """One CLI run per command and kind of server (each one loads the model: seconds)."""
    if (command, url) not in _RUNS:
        args = ["search", "--text", "shirt"] if command == "search" else ["ingest", str(_tiny_catalog(folder))]
        _RUNS[(command, url)] = snapshop(*args, "--qdrant-url", url, env={"SNAPSHOP_STORE__TIMEOUT_S": "2"})
    return _RUNS[(command, url)]


def _tiny_catalog(folder):
    path = folder / "catalog.csv"
    path.write_text("id,title,image\n1,Shirt,a.jpg\n")
    return path
