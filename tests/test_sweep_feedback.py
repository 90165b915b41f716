"""Feedback around sweeps: the progress bar in scripts and notebooks (tqdm, as tqdm.auto picks), and a clear
error for a script that starts worker processes without `if __name__ == "__main__":` (the README's sweep runs
as a script)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import hermes_fast as hf
from hermes_fast.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
GRID = {"workload.rate_per_s": [2.0, 4.0]}


def _pretend_notebook(monkeypatch):
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_progress_shows_in_a_notebook_as_text_without_ipywidgets(monkeypatch, capsys):
    hf.sweep(None, GRID, n_requests=50, chunk_size=1)  # not a terminal, not a notebook: no bar
    assert capsys.readouterr().err == ""
    _pretend_notebook(monkeypatch)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed
    hf.sweep(None, GRID, n_requests=50, chunk_size=1)
    err = capsys.readouterr().err
    assert "validating" in err and "sweep" in err and "2/2" in err and "IProgress" not in err
    hf.sweep(None, GRID, n_requests=50, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_is_a_widget_in_a_notebook_with_ipywidgets(monkeypatch, capsys):
    bars: list[dict] = []

    class Widget:
        def __init__(self, **kwargs):
            bars.append(dict(kwargs, n=kwargs.get("initial", 0)))

        def update(self, n):
            bars[-1]["n"] += n

        def close(self):
            bars[-1]["closed"] = True

    _pretend_notebook(monkeypatch)
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    monkeypatch.setitem(sys.modules, "tqdm.notebook", types.SimpleNamespace(tqdm=Widget))
    hf.sweep(None, GRID, n_requests=50, chunk_size=1)
    assert [(b["desc"], b["total"], b["n"], b["closed"]) for b in bars] == [
        ("validating", 2, 2, True),
        ("sweep", 2, 2, True),
    ]
    assert capsys.readouterr().err == ""


def test_a_sweep_run_by_a_worker_importing_the_script_is_refused():
    code = compile("import hermes_fast as hf\nhf.sweep(None, None, n_requests=10)\n", "script.py", "exec")
    with pytest.raises(ConfigError) as e:
        exec(code, {"__name__": "__mp_main__"})  # how a spawned worker process imports an unguarded script
    assert e.value.path == "hf.sweep" and 'under `if __name__ == "__main__":`' in e.value.expected
    exec(code, {"__name__": "__main__"})  # the script itself runs


def _readme_sweep() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Sweeps") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _script(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    (tmp_path / "examples").mkdir(exist_ok=True)
    (tmp_path / "examples" / "serving_chunked.yaml").write_text(
        (REPO / "examples" / "serving_chunked.yaml").read_text()
    )
    (tmp_path / "sweep.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "sweep.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )


def test_the_readme_sweep_is_guarded():
    code = _readme_sweep()
    assert 'if __name__ == "__main__":' in code and "workers=2" in code
    body = code.split('if __name__ == "__main__":')[1]
    assert "hf.sweep(" in body and "hf.pareto(" in body  # the work is under the guard


@pytest.mark.slow
def test_the_readme_sweep_runs_as_a_script_and_unguarded_says_why_not(tmp_path):
    code = _readme_sweep().replace("n_requests=10_000", "n_requests=400")  # the example's warm-up is 200
    proc = _script(tmp_path, code + "\n    print(ds.attrs['points_done'], ds.sizes['replicate'], int(front.sum()))\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[:2] == ["16", "2"] and int(proc.stdout.split()[2]) >= 1
    assert hf.open_sweep(tmp_path / "results.zarr").attrs["points_done"] == 16
    unguarded = code.replace('if __name__ == "__main__":  #', "if True:  #")
    (tmp_path / "u").mkdir()
    proc = _script(tmp_path / "u", unguarded)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("hermes_fast.config.base.ConfigError: workers: got 2;")
    assert 'call hf.sweep under `if __name__ == "__main__":`' in proc.stderr
