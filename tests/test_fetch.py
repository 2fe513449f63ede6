"""``fetch`` against a local HTTP server: success, mirror fallback, and clean failures."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from slide.data import XCDataset, fetch, get_dataset, list_datasets, load_xc, read_xc, write_xc
from slide.data.fetch import URL_ENV
from slide.data.splits import test_order
from slide.errors import ConfigError, FetchError

pytestmark = pytest.mark.usefixtures("isolated_cache")

NF, NL, NTR, NTE = 20, 6, 30, 12
DEAD_URL = "http://127.0.0.1:9/{id}"  # discard port: connection refused


def tiny(n, seed):
    rng = np.random.default_rng(seed)
    xp = np.zeros(n + 1, np.int64)
    np.cumsum(rng.integers(1, 5, n), out=xp[1:])
    yp = np.zeros(n + 1, np.int64)
    np.cumsum(rng.integers(1, 3, n), out=yp[1:])
    xi = np.concatenate([rng.choice(NF, xp[i + 1] - xp[i], replace=False) for i in range(n)]).astype(np.int32)
    yi = np.concatenate([rng.choice(NL, yp[i + 1] - yp[i], replace=False) for i in range(n)]).astype(np.int32)
    return XCDataset(xp, xi, np.round(rng.random(xp[-1]), 3).astype(np.float32) + np.float32(0.001),
                     yp, yi, NF, NL)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("xc")
    write_xc(d / "train.txt", tiny(NTR, 1))
    write_xc(d / "test.txt", tiny(NTE, 2))
    write_xc(d / "all.txt", tiny(NTR + NTE, 3))
    perm = np.random.default_rng(0).permutation(NTR + NTE) + 1
    return {"train": (d / "train.txt").read_bytes(), "test": (d / "test.txt").read_bytes(),
            "all": (d / "all.txt").read_bytes(),
            "trsplit": "".join(f"{a} {b}\n" for a, b in zip(perm[:NTR], perm[NTR:].tolist() * 3)).encode(),
            "tstsplit": "".join(f"{a} {a}\n" for a in perm[NTR:]).encode()}


def make_zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: dict, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return buf.getvalue()


def good_members(texts):
    return {"Tiny/tiny_train.txt": texts["train"], "Tiny/tiny_test.txt": texts["test"]}


def registry(**over):
    entry = {"title": "Tiny", "drive_id": "orig.zip", "mirror_id": None, "md5": None,
             "folder": "Tiny", "layout": "train_test",
             "files": {"train": "tiny_train.txt", "test": "tiny_test.txt"},
             "stats": {"features": NF, "labels": NL, "train_points": NTR, "test_points": NTE}}
    stats = over.pop("stats", {})
    entry.update(over)
    entry["stats"] = {**entry["stats"], **stats}
    return {"datasets": {"tiny": entry}}


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(root=root, requests=requests,
                              url=f"http://127.0.0.1:{httpd.server_address[1]}/{{id}}")
    finally:
        httpd.shutdown()
        httpd.server_close()


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def run(reg, server_or_url, root, **kw):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    return fetch("tiny", root=root, progress=False, registry=reg, url_template=url, **kw)


# ----------------------------------------------------------------------------- success


def test_fetch_good_archive(tmp_path, server, texts):
    (server.root / "orig.zip").write_bytes(make_zip(good_members(texts)))
    root = tmp_path / "data"
    res = run(registry(), server, root)
    raw = root / "raw" / "tiny"
    assert res["train"] == str(raw / "Tiny" / "tiny_train.txt")
    assert res["test"] == str(raw / "Tiny" / "tiny_test.txt")
    assert Path(res["train"]).read_bytes() == texts["train"]
    assert (raw / ".verified").is_file()
    marker = json.loads((raw / ".verified").read_text())
    assert marker["origin"].startswith("download (original")
    assert marker["stats"]["train"]["points"] == NTR
    order = np.load(res["test_order"], allow_pickle=False)
    assert res["test_order"] == str(root / "tiny" / "test_order.npy")
    assert order.dtype == np.int64 and np.array_equal(order, test_order(NTE, 0))
    assert (raw / "Tiny" / "tiny_train.txt.cache.npz").is_file()
    assert all_files(root) == sorted([
        "raw", "raw/tiny", "raw/tiny/.verified", "raw/tiny/Tiny", "raw/tiny/Tiny/tiny_test.txt",
        "raw/tiny/Tiny/tiny_test.txt.cache.npz", "raw/tiny/Tiny/tiny_train.txt",
        "raw/tiny/Tiny/tiny_train.txt.cache.npz", "tiny", "tiny/test_order.npy"])
    # second call: verified marker, no download
    n = len(server.requests)
    assert run(registry(), server, root) == res
    assert len(server.requests) == n
    assert len(load_xc(res["train"])) == NTR


def test_mirror_fallback(tmp_path, server, texts):
    (server.root / "mirror.zip").write_bytes(make_zip(good_members(texts)))
    root = tmp_path / "data"
    res = run(registry(drive_id="missing.zip", mirror_id="mirror.zip"), server, root)
    assert server.requests == ["/missing.zip", "/mirror.zip"]
    marker = json.loads((root / "raw" / "tiny" / ".verified").read_text())
    assert "mirror" in marker["origin"]
    assert len(read_xc(res["test"])) == NTE


def test_md5_checked_and_url_from_environment(tmp_path, server, texts, monkeypatch):
    data = make_zip(good_members(texts))
    (server.root / "orig.zip").write_bytes(data)
    monkeypatch.setenv(URL_ENV, server.url)
    res = fetch("tiny", root=tmp_path / "data", progress=False,
                registry=registry(md5=hashlib.md5(data).hexdigest()))
    assert Path(res["train"]).is_file()


def test_tar_archive_without_folder_and_keep_archive(tmp_path, server, texts):
    (server.root / "orig.zip").write_bytes(make_tar({"tiny_train.txt": texts["train"],
                                                     "nested/tiny_test.txt": texts["test"]}))
    root = tmp_path / "data"
    res = run(registry(), server, root, keep_archive=True)
    assert Path(res["train"]).parent == root / "raw" / "tiny" / "Tiny"
    assert Path(res["test"]).read_bytes() == texts["test"]
    assert (root / "raw" / "tiny" / "Tiny.zip").is_file()


def test_split_layout(tmp_path, server, texts):
    members = {"Tiny/tiny_data.txt": texts["all"], "Tiny/tr.txt": texts["trsplit"],
               "Tiny/te.txt": texts["tstsplit"]}
    (server.root / "orig.zip").write_bytes(make_zip(members))
    reg = registry(layout="split", split_column=1,
                   files={"data": "tiny_data.txt", "train_split": "tr.txt", "test_split": "te.txt"})
    res = run(reg, server, tmp_path / "data")
    assert res["train"] == res["test"] == res["data"]
    assert res["split_column"] == 1 and Path(res["train_split"]).is_file()
    assert len(np.load(res["test_order"])) == NTE


# ----------------------------------------------------------------------------- failures


def assert_clean(root: Path):
    """Nothing partial: no files at all under the data root."""
    leftovers = [p for p in all_files(root) if (root / p).is_file()]
    assert leftovers == [], leftovers


def test_corrupt_archive(tmp_path, server):
    (server.root / "orig.zip").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    root = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        run(registry(), server, root)
    msg = str(info.value)
    assert "not a zip or tar" in msg or "corrupt" in msg
    assert "place the files by hand" in msg and "\n" not in msg
    assert not root.exists()


def test_truncated_zip(tmp_path, server, texts):
    data = make_zip(good_members(texts))
    (server.root / "orig.zip").write_bytes(data[: len(data) // 2])
    root = tmp_path / "data"
    with pytest.raises(FetchError):
        run(registry(), server, root)
    assert_clean(root)


def test_md5_mismatch(tmp_path, server, texts):
    (server.root / "orig.zip").write_bytes(make_zip(good_members(texts)))
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="md5"):
        run(registry(md5="0" * 32), server, root)
    assert_clean(root)


def test_member_with_parent_path_refused(tmp_path, server, texts):
    members = {**good_members(texts), "../evil.txt": b"gotcha"}
    (server.root / "orig.zip").write_bytes(make_zip(members))
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="unsafe archive member"):
        run(registry(), server, root)
    assert_clean(root)
    assert not list(tmp_path.rglob("evil.txt"))


def test_absolute_member_and_symlink_refused(tmp_path, server, texts):
    (server.root / "orig.zip").write_bytes(make_tar({**good_members(texts), "/tmp/abs.txt": b"x"}))
    (server.root / "mirror.zip").write_bytes(make_tar(good_members(texts), symlink="Tiny/link"))
    root = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        run(registry(mirror_id="mirror.zip"), server, root)
    assert "unsafe archive member" in str(info.value) and "link" in str(info.value)
    assert_clean(root)


def test_statistics_disagree(tmp_path, server, texts):
    (server.root / "orig.zip").write_bytes(make_zip(good_members(texts)))
    root = tmp_path / "data"
    with pytest.raises(FetchError, match=f"number of points is {NTR} but the registry says {NTR + 1}"):
        run(registry(stats={"train_points": NTR + 1}), server, root)
    assert_clean(root)
    with pytest.raises(FetchError, match="number of labels"):
        run(registry(stats={"labels": NL + 1}), server, root)
    assert_clean(root)


def test_bad_file_inside_archive(tmp_path, server, texts):
    members = {"Tiny/tiny_train.txt": texts["train"], "Tiny/tiny_test.txt": b"12 20 6\n0 1:nan\n"}
    (server.root / "orig.zip").write_bytes(make_zip(members))
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="NaN"):
        run(registry(), server, root)
    assert_clean(root)


def test_no_network_gives_manual_instructions(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        run(registry(mirror_id="m.zip"), DEAD_URL, root)
    msg = str(info.value)
    assert "\n" not in msg and "original orig.zip" in msg and "mirror m.zip" in msg
    assert f"place the files by hand in {root / 'raw' / 'tiny' / 'Tiny'}/" in msg
    assert not root.exists()


def test_existing_root_is_kept_on_failure(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "README.md").write_text("keep me")
    with pytest.raises(FetchError):
        run(registry(), DEAD_URL, root)
    assert all_files(root) == ["README.md"]


# ----------------------------------------------------------------------------- by hand


def place(root: Path, texts, which=("train", "test")):
    folder = root / "raw" / "tiny" / "Tiny"
    folder.mkdir(parents=True)
    for key in which:
        (folder / f"tiny_{key}.txt").write_bytes(texts[key])
    return folder


def test_files_placed_by_hand_are_verified_without_download(tmp_path, texts):
    root = tmp_path / "data"
    folder = place(root, texts)
    res = run(registry(), DEAD_URL, root)
    assert res["train"] == str(folder / "tiny_train.txt")
    marker = json.loads((root / "raw" / "tiny" / ".verified").read_text())
    assert marker["origin"] == "placed by hand"
    assert Path(res["test_order"]).is_file()
    # a change to a file invalidates the marker: verified again (and fails here)
    (folder / "tiny_test.txt").write_bytes(texts["test"].replace(b"12 20 6", b"11 20 6", 1))
    with pytest.raises(Exception):
        run(registry(), DEAD_URL, root)
    assert not (root / "raw" / "tiny" / ".verified").exists()
    assert (folder / "tiny_test.txt").exists()  # user's files are never deleted


def test_hand_placed_files_with_wrong_statistics(tmp_path, texts):
    root = tmp_path / "data"
    folder = place(root, texts)
    with pytest.raises(FetchError, match="placed by hand"):
        run(registry(stats={"features": NF + 5}), DEAD_URL, root)
    assert sorted(p.name for p in folder.iterdir()) == ["tiny_test.txt", "tiny_train.txt"]
    assert not (root / "raw" / "tiny" / ".verified").exists()
    assert not (root / "tiny" / "test_order.npy").exists()


def test_partial_hand_placement_is_reported(tmp_path, texts):
    root = tmp_path / "data"
    place(root, texts, which=("train",))
    with pytest.raises(FetchError, match="missing tiny_test.txt"):
        run(registry(), DEAD_URL, root)


def test_archive_placed_by_hand(tmp_path, texts):
    root = tmp_path / "data"
    raw = root / "raw" / "tiny"
    raw.mkdir(parents=True)
    (raw / "Tiny.zip").write_bytes(make_zip(good_members(texts)))
    res = run(registry(), DEAD_URL, root)
    assert Path(res["train"]).read_bytes() == texts["train"]


# ----------------------------------------------------------------------------- registry


def test_packaged_registry():
    assert {"delicious-200k", "amazon-670k", "bibtex"} <= set(list_datasets())
    d = get_dataset("Delicious-200K")
    assert (d.drive_id, d.mirror_id) == ("0B3lPMIHmG6vGR3lBWWYyVlhDLWM", "18Tb595TuGyFW--nEYGfduwS5WvSbX-sX")
    assert d.file_names == ["deliciousLarge_train.txt", "deliciousLarge_test.txt"]
    assert d.stats["features"] == 782585 and d.stats["labels"] == 205443
    assert d.stats["train_points"] == 196606 and d.stats["test_points"] == 100095
    a = get_dataset("amazon-670k")
    assert (a.drive_id, a.mirror_id) == ("0B3lPMIHmG6vGdUJwRzltS1dvUVk", "1PV-wbKVv6Ng1K1XM1USqNxFhaQo2qfk6")
    assert (a.stats["features"], a.stats["labels"], a.stats["train_points"], a.stats["test_points"]) == \
        (135909, 670091, 490449, 153025)
    b = get_dataset("bibtex")
    assert b.md5 == "78db23bd26486d4188502abf6a39b856" and b.layout == "split"
    assert b.file_names == ["Bibtex_data.txt", "bibtex_trSplit.txt", "bibtex_tstSplit.txt"]
    with pytest.raises(ConfigError, match="unknown dataset"):
        get_dataset("nope")


def test_registry_validation(tmp_path):
    with pytest.raises(ConfigError, match="lacks files"):
        get_dataset("tiny", registry(files={"train": "a.txt"}))
    with pytest.raises(ConfigError, match="plain name"):
        get_dataset("tiny", registry(files={"train": "../a.txt", "test": "b.txt"}))
    with pytest.raises(ConfigError, match="unknown keys"):
        get_dataset("tiny", registry(colour="red"))
    p = tmp_path / "reg.yaml"
    p.write_text("datasets:\n  tiny:\n    folder: T\n    files: {train: a, test: b}\n"
                 "    stats: {features: 1, labels: 1, train_points: 1, test_points: 1}\n")
    assert get_dataset("tiny", p).folder == "T"


# ----------------------------------------------------------------------------- slow servers


@pytest.fixture
def slow_server():
    """127.0.0.1 server that trickles (/trickle: 1 byte per 0.1 s) or stays silent (/silent)."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.flush()
            try:
                for _ in range(200):  # bounded: 20 s at most
                    if stop.wait(0.1):
                        return
                    if self.path.startswith("/trickle"):
                        self.wfile.write(b"P")
                        self.wfile.flush()
            except OSError:
                return

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{{id}}"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


def timed_fetch_error(reg, url, root, **kw):
    import time

    t0 = time.monotonic()
    with pytest.raises(FetchError) as info:
        run(reg, url, root, **kw)
    return str(info.value), time.monotonic() - t0


def test_trickling_server_is_cut_off_by_the_deadline(tmp_path, slow_server):
    """Issue 10 item 10: one byte every few seconds kept the fetch running forever."""
    from slide.data.fetch import DownloadLimits

    root = tmp_path / "data"
    msg, took = timed_fetch_error(registry(drive_id="trickle"), slow_server, root,
                                  limits=DownloadLimits(deadline=1.0, min_rate=0, read_timeout=5))
    assert "download exceeded its deadline of 1 s" in msg and "--deadline" in msg and "\n" not in msg
    assert took < 4
    assert not root.exists()


def test_trickling_server_is_cut_off_by_the_minimum_rate(tmp_path, slow_server):
    from slide.data.fetch import DownloadLimits

    root = tmp_path / "data"
    msg, took = timed_fetch_error(registry(drive_id="trickle"), slow_server, root,
                                  limits=DownloadLimits(deadline=0, min_rate=1000, rate_window=0.5))
    assert "download too slow" in msg and "below the minimum of 1000 B/s" in msg and "--min-rate" in msg
    assert took < 4
    assert not root.exists()


def test_silent_server_hits_the_read_timeout_and_limits_come_from_the_environment(
        tmp_path, slow_server, monkeypatch):
    monkeypatch.setenv("SLIDE_FETCH_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("SLIDE_FETCH_DEADLINE", "30")
    msg, took = timed_fetch_error(registry(drive_id="silent"), slow_server, tmp_path / "data")
    assert "no data received for 0.5 s" in msg and took < 4
    monkeypatch.setenv("SLIDE_FETCH_DEADLINE", "0.7")
    monkeypatch.setenv("SLIDE_FETCH_READ_TIMEOUT", "60")
    msg, took = timed_fetch_error(registry(drive_id="trickle"), slow_server, tmp_path / "data")
    assert "deadline of 0.7 s" in msg and took < 4
    monkeypatch.setenv("SLIDE_FETCH_MIN_RATE", "fast")
    with pytest.raises(ConfigError, match="SLIDE_FETCH_MIN_RATE must be a number"):
        run(registry(drive_id="trickle"), slow_server, tmp_path / "data")


def test_fetch_cli_deadline_is_one_line(tmp_path, slow_server):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "SLIDE_CACHE_DIR": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-m", "slide.data.commands", "data", "fetch", "bibtex",
                           "--root", str(tmp_path / "data"), "--url-template", slow_server.replace("{id}", "trickle{id}"),
                           "--no-progress", "--deadline", "0.6", "--min-rate", "0"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slide: error: could not fetch bibtex"), proc.stderr
    assert "deadline of 0.6 s" in lines[0]
    bad = subprocess.run([sys.executable, "-m", "slide.data.commands", "data", "fetch", "bibtex",
                          "--deadline", "-1"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "--deadline" in bad.stderr and "Traceback" not in bad.stderr


def test_gdown_download_obeys_the_deadline(tmp_path, monkeypatch):
    """The Google Drive path runs gdown in a thread the limits can stop waiting for."""
    import time

    gdown = pytest.importorskip("gdown")
    from slide.data.fetch import DownloadLimits

    calls = []

    def trickle(id=None, output=None, quiet=True, cancel=None, **kw):  # noqa: A002
        calls.append(id)
        for _ in range(100):  # bounded: 5 s at most
            if cancel is not None and cancel.is_set():
                raise RuntimeError("cancelled")
            output.write(b"P")
            output.flush()
            time.sleep(0.05)
        return output

    monkeypatch.setattr(gdown, "download", trickle)
    root = tmp_path / "data"
    t0 = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch("tiny", root=root, progress=False, registry=registry(), url_template="",
              limits=DownloadLimits(deadline=0.5, min_rate=0))
    assert "deadline of 0.5 s" in str(info.value) and time.monotonic() - t0 < 4
    assert calls == ["orig.zip"]
    assert not root.exists()


def _dead_pid() -> int:
    import os

    for pid in range(4_000_000, 3_000_000, -7919):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            continue
    pytest.skip("no free process id found")


def test_stale_temporaries_of_a_killed_fetch_are_removed_and_reported(tmp_path, capfd):
    """Issue 10 item 9: a killed fetch left .download-*.part files that were never removed."""
    import os

    raw = tmp_path / "data" / "raw" / "tiny"
    raw.mkdir(parents=True)
    dead = _dead_pid()
    (raw / ".download-k3x_9a2b.part").write_bytes(b"x" * 1000)        # older naming, no pid
    (raw / f".download-{dead}-abc123.part").write_bytes(b"x" * 2000)   # process gone
    (raw / f".extract-{dead}-zz9").mkdir()
    (raw / f".extract-{dead}-zz9" / "half.txt").write_bytes(b"x" * 500)
    live = raw / f".download-{os.getppid()}-live1.part"                 # a running fetch: kept
    live.write_bytes(b"x")
    (raw / "notes.part").write_text("not ours")
    capfd.readouterr()
    with pytest.raises(FetchError):
        run(registry(), DEAD_URL, tmp_path / "data")
    err = capfd.readouterr().err
    assert sorted(p.name for p in raw.iterdir()) == sorted([live.name, "notes.part"])
    assert f"slide: removed 3 stale temporary files of an interrupted fetch from {raw} (0.0 MB)" in err


def test_verification_error_names_the_destination_not_the_deleted_staging_copy(tmp_path, server, texts):
    """Issue 10 item 16: the message named .extract-*/stage/..., deleted when it was printed."""
    members = {"Tiny/tiny_train.txt": texts["train"], "Tiny/tiny_test.txt": b"12 20 6\n0 1:nan\n"}
    (server.root / "orig.zip").write_bytes(make_zip(members))
    root = tmp_path / "data"
    with pytest.raises(FetchError) as info:
        run(registry(), server, root)
    msg = str(info.value)
    assert f"{root / 'raw' / 'tiny' / 'Tiny' / 'tiny_test.txt'}:2: NaN" in msg, msg
    assert ".extract-" not in msg and "stage" not in msg
