"""Sweep stores that never lie: every chunk checked against the digest recorded with its done flag (deleted,
truncated, altered chunk files and lost array metadata are reported, recomputed on resume bit for bit and marked
not computed by ``open_sweep``), one writer at a time (a second is refused naming the holder; a stale lock is
taken over), and an unwritable ``out`` refused before any work."""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import hermes_fast as hf
from hermes_fast.cli import main
from hermes_fast.config import ConfigError
from hermes_fast.sweep import StoreWarning

points = importlib.import_module("hermes_fast.sweep.points")
_REAL_RUN_POINT = points.run_point
REPO = Path(__file__).resolve().parents[1]

SCENARIO = {
    "engines": [{"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm"}],
    "workload": {"rate_per_s": 5.0, "prompt_tokens": 256, "output_tokens": 32},
}
GRID = {"workload.rate_per_s": [2.0, 5.0, 10.0, 20.0, 40.0]}
ARGS = dict(n_requests=100, seed=3, chunk_size=2)  # chunks: points 0-1, 2-3, 4


@pytest.fixture(scope="module")
def reference():
    return hf.sweep(SCENARIO, GRID, **ARGS)


@pytest.fixture
def store(tmp_path, reference):
    out = tmp_path / "r.zarr"
    ds = hf.sweep(SCENARIO, GRID, out=out, **ARGS)
    xr.testing.assert_identical(ds.drop_attrs(), reference.drop_attrs())
    return out


def _counting(monkeypatch) -> list[int]:
    computed: list[int] = []
    monkeypatch.setattr(points, "run_point", lambda plan, i: computed.append(i) or _REAL_RUN_POINT(plan, i))
    return computed


def _chunk_file(out: Path, name: str, k: int) -> Path:
    arr = zarr.open_array(str(out / name), mode="r")
    return out / name / arr.metadata.encode_chunk_key((k,) + (0,) * (arr.ndim - 1))


def _identical_bit_for_bit(ds: xr.Dataset, ref: xr.Dataset) -> None:
    xr.testing.assert_identical(ds.drop_attrs(), ref.drop_attrs())
    for name in ref.data_vars:  # the same bytes, NaN where NaN
        assert ds[name].values.tobytes() == ref[name].values.tobytes(), name


def _damage_is_found_and_repaired(out: Path, ref: xr.Dataset, monkeypatch, chunk_points: list[int], why: str):
    with pytest.warns(StoreWarning, match=why) as record:
        opened = hf.open_sweep(out)
    assert "marked not computed; rerun the sweep with the same arguments" in str(record[0].message)
    assert str(out) in str(record[0].message)
    computed = opened.computed.values
    assert [i for i in range(5) if not computed[i]] == chunk_points
    for name in ("ttft_s", "e2e_s", "completed_requests"):  # nothing unverified is shown as a result
        bad = opened[name].isel({"workload.rate_per_s": chunk_points}).values
        assert np.isnan(bad).all() if bad.dtype.kind == "f" else (bad == 0).all()
    good = [i for i in range(5) if i not in chunk_points]
    sel = {"workload.rate_per_s": good}
    xr.testing.assert_identical(opened.drop_vars("computed").isel(sel).drop_attrs(), ref.isel(sel).drop_attrs())

    calls = _counting(monkeypatch)
    with pytest.warns(StoreWarning, match="recomputing them"):
        ds = hf.sweep(SCENARIO, GRID, out=out, **ARGS)
    assert calls == chunk_points  # only the damaged chunk
    _identical_bit_for_bit(ds, ref)
    _identical_bit_for_bit(hf.open_sweep(out), ref)  # and the store now says so, without a warning
    calls.clear()
    hf.sweep(SCENARIO, GRID, out=out, **ARGS)
    assert calls == []


def test_a_deleted_chunk_file_is_found_and_recomputed(store, reference, monkeypatch):
    _chunk_file(store, "ttft_s", 1).unlink()
    _damage_is_found_and_repaired(store, reference, monkeypatch, [2, 3], "points 2-3: values differ from what was")


def test_a_truncated_chunk_file_is_found_and_recomputed(store, reference, monkeypatch):
    f = _chunk_file(store, "e2e_s", 2)
    f.write_bytes(f.read_bytes()[:7])
    _damage_is_found_and_repaired(store, reference, monkeypatch, [4], r"point 4: e2e_s: chunk file unreadable")


def test_flipped_bytes_are_found_and_recomputed(store, reference, monkeypatch):
    f = _chunk_file(store, "ttft_mean_s", 0)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x40
    f.write_bytes(bytes(data))
    _damage_is_found_and_repaired(store, reference, monkeypatch, [0, 1], "points 0-1")


def test_values_rewritten_behind_the_sweep_are_found(store, reference, monkeypatch):
    arr = zarr.open_array(str(store / "throughput_request_per_s"), mode="a")
    arr[3] = arr[3] * 2  # a well-formed chunk file with other values
    _damage_is_found_and_repaired(store, reference, monkeypatch, [2, 3], "a chunk file missing or altered")


def test_a_lost_array_is_recreated_and_its_points_recomputed(store, reference, monkeypatch):
    (store / "queue_s" / "zarr.json").unlink()
    _damage_is_found_and_repaired(store, reference, monkeypatch, [0, 1, 2, 3, 4], "queue_s: array unreadable")


def test_lost_digests_or_flags_are_recomputed(store, reference, monkeypatch):
    _chunk_file(store, "_digest", 1).unlink()
    _damage_is_found_and_repaired(store, reference, monkeypatch, [2, 3], "points 2-3: no integrity record")
    f = _chunk_file(store, "_done", 2)
    f.write_bytes(b"\x00")
    _damage_is_found_and_repaired(store, reference, monkeypatch, [4], "point 4: done flag unreadable")


def test_a_damaged_store_is_not_changed_by_open_sweep(store):
    _chunk_file(store, "ttft_s", 1).unlink()
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with pytest.warns(StoreWarning):
        hf.open_sweep(store)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


# --- one writer ---------------------------------------------------------------------------------------------

HOLD = (
    "import sys, time\n"
    "from hermes_fast.sweep.lock import StoreLock\n"
    "StoreLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def _holder(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(tmp_path, reference, monkeypatch):
    out = tmp_path / "r.zarr"
    proc = _holder(out)
    try:
        calls = _counting(monkeypatch)
        for overwrite in (False, True):
            with pytest.raises(ConfigError) as e:
                hf.sweep(SCENARIO, GRID, out=out, overwrite=overwrite, **ARGS)
            assert e.value.path == "out" and e.value.value == str(out)
            assert f"process {proc.pid} on host {socket.gethostname()}" in e.value.expected
            assert "holds its lock" in e.value.expected and f"{out}.lock" in e.value.expected
        assert calls == [] and not out.exists()  # refused before any work
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert Path(f"{out}.lock").exists()  # left behind by the killed process
    with pytest.warns(StoreWarning, match=f"took over the lock left by process {proc.pid} on host .*, which is gone"):
        ds = hf.sweep(SCENARIO, GRID, out=out, **ARGS)
    _identical_bit_for_bit(ds, reference)
    assert not Path(f"{out}.lock").exists()  # released


def test_a_reader_may_open_a_store_being_written(store, reference):
    proc = _holder(store)
    try:
        xr.testing.assert_identical(hf.open_sweep(store).drop_attrs(), reference.drop_attrs())
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    out = tmp_path / "r.zarr"
    Path(f"{out}.lock").write_text(json.dumps({"pid": 4242, "host": "elsewhere", "started": 0}))
    with pytest.raises(ConfigError) as e:
        hf.sweep(SCENARIO, GRID, out=out, **ARGS)
    assert "process 4242 on host elsewhere" in e.value.expected
    assert "cannot be checked from this host: delete the lock file once it is gone" in e.value.expected


def test_two_cli_sweeps_on_one_store(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"scenario": SCENARIO, "grid": GRID, **ARGS}))
    out = tmp_path / "r.zarr"
    proc = _holder(out)
    try:
        assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 2
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"hermes-fast: error: out: got '{out}'; expected a store no other")
    assert main(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"hermes-fast: warning: {out}: took over the lock left by process")


def test_cli_reports_damage_on_one_line(store, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"scenario": SCENARIO, "grid": GRID, **ARGS}))
    _chunk_file(store, "ttft_s", 0).unlink()
    assert main(["sweep", str(spec), "--out", str(store), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"hermes-fast: warning: {store}: 1 chunk(s), 2 point(s), missing or corrupt (points 0-1: values differ "
        "from what was written (a chunk file missing or altered)); recomputing them"
    ]


# --- where a store may go -------------------------------------------------------------------------------------


def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(points, "layout_chunk", lambda *a: pytest.fail("nothing may run"))
    monkeypatch.setattr(points, "run_point", lambda *a: pytest.fail("nothing may run"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError) as e:
        hf.sweep(SCENARIO, GRID, out=a_file, **ARGS)
    assert e.value.path == "out" and e.value.expected == "a directory for the zarr store (this is a file)"
    with pytest.raises(ConfigError) as e:
        hf.sweep(SCENARIO, GRID, out=a_file / "r.zarr", **ARGS)
    assert e.value.path == "out" and f"a path below an existing directory ({a_file} is a file)" in e.value.expected
    if os.access("/sys", os.F_OK):  # unwritable even for root
        with pytest.raises(ConfigError) as e:
            hf.sweep(SCENARIO, GRID, out="/sys/r.zarr", **ARGS)
        assert e.value.path == "out" and e.value.expected.startswith("a writable place (/sys: ")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="a writable place"):
            hf.sweep(SCENARIO, GRID, out=ro / "r.zarr", **ARGS)


def test_a_store_of_an_older_format_is_read_but_not_resumed(store, reference):
    group = zarr.open_group(str(store), mode="a")
    meta = dict(group.attrs["hermes_fast_sweep"])
    group.attrs["hermes_fast_sweep"] = {**meta, "format": 1}
    xr.testing.assert_identical(hf.open_sweep(store).drop_attrs(), reference.drop_attrs())
    with pytest.raises(ConfigError) as e:
        hf.sweep(SCENARIO, GRID, out=store, **ARGS)
    assert "a store of this version of hermes_fast (it has format 1, this version writes 2" in e.value.expected


def test_a_store_another_build_wrote_is_read_but_not_resumed(store, reference):
    """A fix that changes what a result means, or a refit of a shipped cost, leaves the version as it is: the
    store keeps the build that wrote it, and a resume with another build would mix the two builds' points."""
    group = zarr.open_group(str(store), mode="a")
    meta = dict(group.attrs["hermes_fast_sweep"])
    assert meta["build"] == hf.build_digest() and reference.attrs["hermes_fast_build"] == meta["build"]
    group.attrs["hermes_fast_sweep"] = {**meta, "build": "0123456789abcdef"}
    reread = hf.open_sweep(store)
    assert reread.attrs["hermes_fast_build"] == "0123456789abcdef"
    xr.testing.assert_identical(reread.drop_attrs(), reference.drop_attrs())
    with pytest.raises(ConfigError) as e:
        hf.sweep(SCENARIO, GRID, out=store, **ARGS)
    assert e.value.path == "out" and (
        f"(build 0123456789abcdef wrote it, this is build {hf.build_digest()}: a fix or a refit" in e.value.expected
    )
    hf.sweep(SCENARIO, GRID, out=store, overwrite=True, **ARGS)  # rerun whole: this build's again
    assert hf.open_sweep(store).attrs["hermes_fast_build"] == hf.build_digest()


def test_the_build_digest_follows_code_catalogs_and_data_but_not_caches_or_prose(tmp_path):
    from hermes_fast._version import tree_digest

    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "stacks.yaml").write_text("vllm:\n  frontend_s: 0.047\n")
    (tmp_path / "simulate.py").write_text("x = 1\n")
    first = tree_digest(tmp_path)
    assert len(first) == 16 and first == tree_digest(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "simulate.py").write_text("cached")
    (tmp_path / "NOTES.md").write_text("prose")
    assert tree_digest(tmp_path) == first
    (tmp_path / "catalog" / "stacks.yaml").write_text("vllm:\n  frontend_s: 0.045\n")  # a refit
    refit = tree_digest(tmp_path)
    assert refit != first
    (tmp_path / "simulate.py").write_text("x = 2\n")  # a fix
    assert tree_digest(tmp_path) not in (first, refit)


def test_a_worker_of_another_build_computes_nothing(tmp_path, monkeypatch):
    """Every chunk checks that its worker runs the build that planned the sweep (a remote worker with another
    install would otherwise mix its points in under the planner's build)."""
    monkeypatch.setattr(points, "build_digest", lambda: "fedcba9876543210")
    with pytest.raises(ConfigError) as e:
        hf.sweep(SCENARIO, GRID, out=tmp_path / "r.zarr", **ARGS)
    assert e.value.path == "workers" and e.value.value == "hermes_fast build fedcba9876543210"
    assert f"workers running the build that planned the sweep ({hf.build_digest()})" in e.value.expected
