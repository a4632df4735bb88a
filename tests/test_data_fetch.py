"""Downloads against a real HTTP server on 127.0.0.1, and the `neurocl data` CLI."""

import hashlib
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurocl.data import DataError, clear_cache, fetch_dataset, load_dataset, verify_dataset
from neurocl.data.cli import data as data_cli
from neurocl.data.fetch import download
from neurocl.data.registry import FileSpec

FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class Mirror:
    """Serves the real t10k files under /good/, and broken variants under other prefixes."""

    def __init__(self, directory: Path):
        self.files = {name: (directory / name).read_bytes() for name in FILES}
        self.requests: list[str] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.requests.append(self.path)
                mode, _, name = self.path.strip("/").partition("/")
                body = mirror.files.get(name)
                if body is None or mode == "missing":
                    self.send_error(404)
                    return
                if mode == "bad":
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "drop":
                    # Promise the whole file, send half, hang up.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode == "slow":
                    time.sleep(2)
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(t10k_dir):
    m = Mirror(t10k_dir)
    yield m
    m.close()


@pytest.fixture
def sums(t10k_dir):
    lines = (t10k_dir / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (line.split() for line in lines if line)}


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch, tmp_path):
    monkeypatch.delenv("NEUROCL_MIRROR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_good_download_verifies_and_lands(mirror, sums, tmp_path):
    dest = tmp_path / "cache" / "mnist-t10k"
    out = fetch_dataset("mnist-t10k", dest, [mirror.url("good")], progress=False)
    assert out == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted([*FILES, "SHA256SUMS"])  # no temp files left
    for name in FILES:
        assert sha(dest / name) == sums[name]
    # The sums file beside them is what `sha256sum -c` reads: one "<sha256>  <name>" per file.
    assert (dest / "SHA256SUMS").read_text() == "".join(f"{sums[n]}  {n}\n" for n in FILES)
    clear_cache()
    assert len(load_dataset("mnist-t10k", root=dest).test_labels) == 2000


def test_default_destination_is_the_user_cache(mirror, tmp_path):
    fetch_dataset("mnist-t10k", mirrors=[mirror.url("good")], progress=False)
    assert sorted(
        p.name for p in (tmp_path / "home/.cache/neurocl/mnist-t10k").iterdir()
    ) == sorted([*FILES, "SHA256SUMS"])


def test_checksum_mismatch_leaves_nothing(mirror, tmp_path):
    dest = tmp_path / "cache" / "mnist-t10k"
    with pytest.raises(DataError, match="checksum mismatch for t10k-images-idx3-ubyte.gz") as err:
        fetch_dataset("mnist-t10k", dest, [mirror.url("bad")], progress=False)
    assert mirror.url("bad") in str(err.value)
    assert not dest.exists()


def test_checksum_mismatch_in_existing_dir_leaves_no_temp_file(mirror, tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_dataset("mnist-t10k", dest, [mirror.url("bad")], progress=False)
    assert list(dest.iterdir()) == []


def test_dropped_connection_leaves_nothing(mirror, tmp_path):
    dest = tmp_path / "cache" / "mnist-t10k"
    with pytest.raises(DataError, match="connection closed early") as err:
        fetch_dataset("mnist-t10k", dest, [mirror.url("drop")], progress=False)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value)
    assert not dest.exists()


def test_timeout_is_an_error(mirror, tmp_path):
    spec = FileSpec(FILES[1], None, "0" * 64)
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(DataError, match="timed out"):
        download(mirror.url("slow") + FILES[1], dest / FILES[1], spec, timeout=0.3, progress=False)
    assert list(dest.iterdir()) == []


def test_falls_back_to_next_mirror(mirror, sums, tmp_path):
    dest = tmp_path / "d"
    fetch_dataset("mnist-t10k", dest, [mirror.url("missing"), mirror.url("good")], progress=False)
    assert all(sha(dest / name) == sums[name] for name in FILES)
    assert mirror.requests == [
        f"/missing/{FILES[0]}",
        f"/good/{FILES[0]}",
        f"/missing/{FILES[1]}",
        f"/good/{FILES[1]}",
    ]


def test_every_mirror_failing_reports_each(mirror, tmp_path):
    with pytest.raises(DataError) as err:
        fetch_dataset(
            "mnist-t10k", tmp_path / "d", [mirror.url("missing"), mirror.url("bad")], progress=False
        )
    msg = str(err.value)
    assert "every mirror failed" in msg and "HTTP 404" in msg and "checksum mismatch" in msg
    assert not (tmp_path / "d").exists()


def test_neurocl_mirror_env(mirror, monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROCL_MIRROR", f"{mirror.url('missing')}, {mirror.url('good')}")
    fetch_dataset("mnist-t10k", tmp_path / "d", progress=False)
    assert mirror.requests[0].startswith("/missing/") and len(mirror.requests) == 4


def test_verified_files_are_not_downloaded_again(mirror, tmp_path):
    dest = tmp_path / "d"
    fetch_dataset("mnist-t10k", dest, [mirror.url("good")], progress=False)
    n = len(mirror.requests)
    fetch_dataset("mnist-t10k", dest, [mirror.url("good")], progress=False)
    assert len(mirror.requests) == n


def test_refuses_a_file_without_a_known_checksum(mirror, tmp_path):
    with pytest.raises(DataError, match="no published SHA-256"):
        download(mirror.url("good") + FILES[1], tmp_path / FILES[1], FileSpec(FILES[1], None, None))
    assert mirror.requests == [] and list(tmp_path.iterdir()) == []


def test_digits_has_nothing_to_fetch():
    with pytest.raises(DataError, match="bundled with scikit-learn"):
        fetch_dataset("digits")


# --- CLI ------------------------------------------------------------------------------------


def test_cli_fetch_then_verify(mirror, tmp_path):
    dest = tmp_path / "d"
    runner = CliRunner()
    res = runner.invoke(
        data_cli,
        [
            "fetch",
            "mnist-t10k",
            "--dest",
            str(dest),
            "--mirror",
            mirror.url("good"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(data_cli, ["verify", "mnist-t10k", "--dir", str(dest)])
    assert res.exit_code == 0, res.output
    assert res.output.count("OK") == 2
    blob = bytearray((dest / FILES[1]).read_bytes())
    blob[-1] ^= 1
    (dest / FILES[1]).write_bytes(bytes(blob))
    res = runner.invoke(data_cli, ["verify", "mnist-t10k", "--dir", str(dest)])
    assert res.exit_code != 0
    assert "MISMATCH" in res.output and FILES[1] in res.output


def test_cli_fetch_failure_is_a_clean_error(mirror, tmp_path):
    res = CliRunner().invoke(
        data_cli,
        [
            "fetch",
            "mnist-t10k",
            "--dest",
            str(tmp_path / "d"),
            "--mirror",
            mirror.url("drop"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 1
    assert "connection closed early" in res.output and "Traceback" not in res.output


def test_verify_reports_missing_files(tmp_path, t10k_dir):
    partial = tmp_path / "mnist-t10k"
    partial.mkdir()
    shutil.copy(t10k_dir / FILES[0], partial)
    checks = verify_dataset("mnist-t10k", directory=partial)
    assert [c.status for c in checks] == ["ok", "missing"]


def test_cli_list_shows_where_and_size(t10k_dir, monkeypatch):
    monkeypatch.setenv("NEUROCL_DATA", str(t10k_dir.parent))
    res = CliRunner().invoke(data_cli, ["list"])
    assert res.exit_code == 0, res.output
    line = next(line for line in res.output.splitlines() if line.startswith("mnist-t10k"))
    assert str(t10k_dir) in line and "1.7 MB" in line
    assert any(line.startswith("digits") for line in res.output.splitlines())
    cognitive = next(line for line in res.output.splitlines() if line.startswith("cognitive"))
    assert "generated" in cognitive and "NeuroGym" in cognitive


def test_cli_fetch_if_missing_uses_what_is_there(t10k_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROCL_DATA", str(t10k_dir.parent))
    # A mirror nobody listens on: any download attempt would fail the command.
    res = CliRunner().invoke(
        data_cli, ["fetch", "--if-missing", "mnist-t10k", "digits", "--mirror", "http://127.0.0.1:9/", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert f"mnist-t10k: found in {t10k_dir}" in res.output
    assert "digits: found in scikit-learn" in res.output
    assert not (tmp_path / "home" / ".cache").exists()


def test_cli_fetch_if_missing_fetches_what_is_not(mirror, sums, monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROCL_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr("neurocl.data.search.DEBIAN_DATASETS", tmp_path / "debian")
    res = CliRunner().invoke(
        data_cli, ["fetch", "--if-missing", "mnist-t10k", "--mirror", mirror.url("good"), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    cached = tmp_path / "home/.cache/neurocl/mnist-t10k"
    assert f"mnist-t10k: verified, in {cached}" in res.output
    assert {n: sha(cached / n) for n in FILES} == {n: sums[n] for n in FILES}
    again = CliRunner().invoke(data_cli, ["fetch", "--if-missing", "mnist-t10k", "--mirror", mirror.url("missing")])
    assert again.exit_code == 0 and f"mnist-t10k: found in {cached}" in again.output
    assert len([r for r in mirror.requests if r.startswith("/good/")]) == len(FILES)  # fetched once


def test_cli_fetch_unreachable_says_what_to_do_offline(monkeypatch, tmp_path):
    res = CliRunner().invoke(
        data_cli, ["fetch", "mnist-t10k", "--mirror", "http://127.0.0.1:9/", "--no-progress", "--timeout", "5"]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "cannot connect" in res.output
    assert "Without internet access here: run `neurocl data fetch mnist-t10k` on a machine" in res.output
    assert "NEUROCL_DATA" in res.output


def test_cli_fetch_rejects_unknown_names_before_fetching_any(mirror):
    res = CliRunner().invoke(data_cli, ["fetch", "mnist-t10k", "no-such-set", "--mirror", mirror.url("good")])
    assert res.exit_code == 1 and "unknown dataset 'no-such-set'" in res.output
    assert mirror.requests == []


@pytest.mark.parametrize("sums, expected", [
    ("garbage\n", "line 1 is not '<sha256>  <file name>'"),
    ("", "is empty"),
    ("0" * 64 + "  t10k-labels-idx1-ubyte.gz\n", "SHA256SUMS line 1 says " + "0" * 64),
    ("0" * 64 + "  not-there.gz\n", "listed in"),
])
def test_verify_fails_on_a_wrong_or_unreadable_sums_file(t10k_dir, tmp_path, sums, expected):
    for name in FILES:
        shutil.copy(t10k_dir / name, tmp_path / name)
    (tmp_path / "SHA256SUMS").write_text(sums)
    res = CliRunner().invoke(data_cli, ["verify", "mnist-t10k", "--dir", str(tmp_path)])
    assert res.exit_code == 1 and expected in res.output, res.output
    # The real sums file beside the same files passes.
    shutil.copy(t10k_dir / "SHA256SUMS", tmp_path / "SHA256SUMS")
    res = CliRunner().invoke(data_cli, ["verify", "mnist-t10k", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output


def test_labels_outside_a_known_datasets_classes_are_an_error(isolated):
    import numpy as np

    from neurocl.data import write_idx

    d = isolated / "data" / "mnist-t10k"
    d.mkdir(parents=True)
    labels = np.arange(20, dtype=np.uint8) % 10
    labels[7] = 11
    # Decompressed files: the published sums are of the .gz files, so only the labels can tell.
    write_idx(d / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28), dtype=np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match=r"label 11 \(example 7, and 0 more\) is not one of mnist-t10k's classes 0-9"):
        load_dataset("mnist-t10k", root=isolated / "data")


def test_a_known_dataset_whose_files_are_not_the_published_ones_is_an_error(isolated):
    import numpy as np

    from neurocl.data import write_idx

    d = isolated / "data" / "mnist-t10k"
    d.mkdir(parents=True)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 28), dtype=np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: not the published t10k-images-idx3-ubyte.gz \(expected [0-9a-f]{64}, got [0-9a-f]{64}\)"):
        load_dataset("mnist-t10k", root=isolated / "data")


def test_the_real_files_pass_the_check_at_load(t10k_dir, isolated):
    assert len(load_dataset("mnist-t10k", root=t10k_dir.parent).test_labels) == 2000
