"""The knobs: `run`/`estimate`/`capacity` flags as dotted-path overrides (results equal the scenario with those
settings, errors name the flag and path), the run header (rate, lengths, policy), tables that stay aligned for
large values, and `hermes-fast capacity` (targets, the binding target, the metrics at capacity)."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast.cli import main, print_simulation
from hermes_fast.cli.capacity import parse_duration, parse_target
from hermes_fast.cli.run import format_table
from hermes_fast.config import ConfigError, load_yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEFAULT = load_yaml(Path(hf.__file__).parent / "scenarios" / "default.yaml")
N = 300


def _apply(base: dict, settings: dict) -> dict:
    from hermes_fast.config.grid import apply_settings

    return apply_settings(copy.deepcopy(base), list(settings.items()))


def test_run_flags_are_the_scenario_with_those_settings(tmp_path, capsys):
    out = tmp_path / "r.nc"
    flags = ["--rate", "6", "--prompt-tokens", "512", "--output-tokens", "64", "--policy", "chunked"]
    flags += ["--tp", "2", "--replicas", "2", "--model", "llama-3.1-8b", "--device", "h200_sxm"]
    assert main(["run", "--requests", str(N), "--seed", "1", *flags, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    engine = "engines[llama8b-h100]"
    sc = _apply(
        DEFAULT,
        {
            "workload.rate_per_s": 6.0,
            "workload.prompt_tokens": 512,
            "workload.output_tokens": 64,
            f"{engine}.batching.policy": "chunked",
            f"{engine}.parallel.tp": 2,
            f"{engine}.replicas": 2,
            f"{engine}.device": "h200_sxm",
        },
    )
    ref = hf.simulate(sc, n_requests=N, seed=1)
    xr.testing.assert_identical(xr.load_dataset(out).drop_attrs(), ref.drop_attrs())
    assert "# workload: Poisson arrivals at 6 req/s; prompt 512 tokens, output 64 tokens" in text
    assert (
        "# engine llama8b-h100: llama-3.1-8b on 2 x h200_sxm (tp 2), 2 replica(s), chunked batching "
        "(max batch 1024), stack vllm" in text
    )
    # the other engine of the default scenario does not serve: left as it is
    assert sc["engines"][1] == DEFAULT["engines"][1]


def test_no_flags_leave_the_run_as_it_was(tmp_path, capsys):
    out = tmp_path / "r.nc"
    assert main(["run", "--requests", str(N), "--out", str(out)]) == 0
    xr.testing.assert_identical(xr.load_dataset(out).drop_attrs(), hf.simulate(n_requests=N).drop_attrs())


def test_lengths_set_every_class_and_the_header_shows_them(tmp_path, capsys):
    example = EXAMPLES / "serving_chunked.yaml"
    out = tmp_path / "r.nc"
    assert main(["run", str(example), "--requests", str(N), "--prompt-tokens", "700", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    base = load_yaml(example)
    sc = _apply(base, {"workload.prompt_tokens": 700, "workload.classes[0].prompt_tokens": 700})
    sc = _apply(sc, {"workload.classes[1].prompt_tokens": 700})
    xr.testing.assert_identical(xr.load_dataset(out).drop_attrs(), hf.simulate(sc, n_requests=N).drop_attrs())
    header = next(line for line in text.splitlines() if line.startswith("# workload"))
    assert "chat 75%: prompt 700, output lognormal mean 300 cv 1 in [1, 4000] tokens" in header
    assert "summarise 25%: prompt 700, output normal mean 150 std 50 in [16, 400] tokens" in header


def test_disaggregated_and_pipeline_flags_set_the_engines_that_serve(capsys):
    for example, engines in (("serving_disaggregated.yaml", ["prefill", "decode"]), ("pipeline_rag.yaml", ["llama8b"])):
        assert main(["run", str(EXAMPLES / example), "--requests", "100", "--policy", "chunked"]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# engine")]
        assert [line.split()[2].rstrip(":") for line in lines] == engines
        assert all("chunked batching" in line for line in lines)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tp", "3"], "--tp (engines[0].parallel.tp): got 3; expected "),
        (["--policy", "fifo"], "--policy (engines[0].batching.policy): got 'fifo'; expected "),
        (["--model", "llama-3.1-8"], "--model (engines[0].model): got 'llama-3.1-8'; expected "),
        (["--device", "h100"], "--device (engines[0].device): got 'h100'; expected "),
        (["--rate", "-1"], "--rate (workload.rate_per_s): got -1.0; expected "),
        (["--replicas", "0"], "--replicas (engines[0].replicas): got 0; expected "),
        (["--prompt-tokens", "0"], "--prompt-tokens (workload.prompt_tokens): got 0; expected "),
    ],
    ids=lambda x: x[0] if isinstance(x, list) else "",
)
def test_bad_flag_values_are_one_error_naming_the_flag(flags, message, capsys):
    """The flag, the path it set and the value; what is expected there is the config loading's own text."""
    assert main(["run", "--requests", "10", *flags]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"hermes-fast: error: {message}"), err


def test_rate_of_a_replayed_trace_is_refused(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,10,5\n0.5,10,5\n")
    p = tmp_path / "s.yaml"
    p.write_text(
        "engines: [{name: e, model: llama-3.1-8b, device: h100_sxm}]\n"
        f"workload: {{arrival: {{process: trace, trace: {{path: '{trace}'}}}}}}\n"
    )
    assert main(["run", str(p), "--rate", "5"]) == 2
    assert "--rate: got 5.0; expected a scenario whose arrival times follow workload.rate_per_s" in (
        capsys.readouterr().err
    )


def test_estimate_flags_set_every_engine(capsys):
    assert main(["estimate", "--device", "h200_sxm", "--output-tokens", "100"]) == 0
    out = capsys.readouterr().out
    sc = _apply(
        DEFAULT, {"engines[0].device": "h200_sxm", "engines[1].device": "h200_sxm", "workload.output_tokens": 100}
    )
    ds = hf.estimate(sc)
    rows = [line.split() for line in out.splitlines() if line.startswith("llama")]
    assert [r[2] for r in rows] == [f"{v * 1e3:.3f}" for v in ds.tpot_s.values]
    for flag in ("--rate", "--replicas", "--policy"):
        assert main(["estimate", flag, "2" if flag != "--policy" else "static"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hermes-fast: error: {flag}: got") and "a zero-load estimate" in err
    assert main(["estimate", "--tp", "2", "--grid", "engines.llama8b-h100.parallel.tp=1,2"]) == 2
    assert "--tp: got 2; expected a field no --grid key sets (engines.llama8b-h100.parallel.tp)" in (
        capsys.readouterr().err
    )


# --- tables ---------------------------------------------------------------------------------------------------


def _columns_line_up(lines: list[str]) -> None:
    """Every cell ends where its header ends (right-aligned), and cells are apart."""
    ends = [m.end() for m in re.finditer(r"\S+(?: \(\w+\))?", lines[0])]
    for line in lines[1:]:
        cells = list(re.finditer(r"\S+", line))
        assert [m.end() for m in cells][-len(ends) + 1 :] == ends[1:], (lines[0], line)


def test_overloaded_latencies_stay_in_their_columns():
    ds = hf.simulate(n_requests=100, seed=1)
    for name in ("ttft", "e2e", "queue"):  # as overload gives: 1e6 ms and more
        ds[f"{name}_s"] = ds[f"{name}_s"] * 1e5
        ds[f"{name}_mean_s"] = ds[f"{name}_mean_s"] * 1e5
    buf = io.StringIO()
    print_simulation(ds, out=buf)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("latency (ms)"))
    table = lines[start : start + 6]
    _columns_line_up(table)
    e2e = table[4].split()
    assert e2e[0] == "E2E" and float(e2e[5]) == pytest.approx(
        float(ds.e2e_s.sel(quantile=0.99, replicate=0)) * 1e3, abs=0.01
    )
    assert all(float(v) > 1e5 for v in e2e[1:])


def test_format_table_widens_for_the_widest_cell():
    lines = format_table(["x", "a", "b"], [["r1", "1.00", "123456789012.50"], ["r2", "2.00", "3.00"]])
    assert lines == [
        "x                      a                b",
        "r1                  1.00  123456789012.50",
        "r2                  2.00             3.00",
    ]


def test_estimate_table_widens_for_large_values():
    ds = hf.estimate(grid={"batch_size": [1, 4096]})
    ds["ttft_s"] = ds.ttft_s * 1e6
    buf = io.StringIO()
    from hermes_fast.cli import print_estimate

    print_estimate(ds, out=buf)
    lines = [line for line in buf.getvalue().splitlines() if not line.startswith("#")]
    head = lines[0]
    end = head.index("TTFT ms") + len("TTFT ms")
    for line in lines[1:]:
        ttft = line.split()[2]  # right-aligned under its header, a space before it
        assert float(ttft) > 1e6 and line[:end].endswith(" " + ttft)


# --- capacity -----------------------------------------------------------------------------------------------


def test_durations_and_targets_parse():
    assert parse_duration("2", "--x") == 2.0 and parse_duration("50ms", "--x") == 0.05
    assert parse_duration("800us", "--x") == pytest.approx(8e-4) and parse_duration("1.5s", "--x") == 1.5
    assert parse_target("ttft:p90:300ms") == ("ttft", 0.9, 0.3)
    assert parse_target("TPOT:mean:40ms") == ("tpot", None, 0.04)
    assert parse_target("e2e:0.99:20") == ("e2e", 0.99, 20.0)
    for bad in ("0", "-1s", "1h", "ms", "inf"):
        with pytest.raises(ConfigError, match="a positive duration"):
            parse_duration(bad, "--x")


def test_capacity_prints_the_rate_the_binding_target_and_the_metrics(tmp_path, capsys):
    out = tmp_path / "c.json"
    flags = ["--ttft-p99", "500ms", "--target", "tpot:p99:30ms", "--rate-max", "100", "--requests", str(N)]
    assert main(["capacity", *flags, "--seed", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    targets = {"ttft": {"quantile": 0.99, "max_s": 0.5}, "tpot": {"quantile": 0.99, "max_s": 0.03}}
    ref = hf.capacity_search(None, {**targets, "rate_max_per_s": 100}, n_requests=N, seed=3)
    cap = float(ref.capacity_request_per_s[0])
    names = ref.capacity_bound.attrs["flag_meanings"].split()
    bound = names[int(ref.capacity_bound[0])]
    words = {"ttft": "TTFT p99 <= 500 ms", "tpot": "TPOT p99 <= 30 ms", "unstable": "not overloaded (unstable)"}
    assert f"capacity      {cap:.3f} req/s" in text and f"binding       {words[bound]}" in text
    assert "# targets: TTFT p99 <= 500 ms, TPOT p99 <= 30 ms, not overloaded; rates 0.1 to 100 req/s, to 1%" in text
    assert "# workload: Poisson arrivals; prompt 1024 tokens, output 256 tokens" in text
    assert f"{float(ref.tpot_s.sel(quantile=0.99)[0]) * 1e3:.2f}" in text.split("# at that rate:")[1]
    summary = json.loads(out.read_text())
    assert summary["variables"]["capacity_request_per_s"]["values"] == [cap]
    assert (
        summary["variables"]["capacity_bound"]["flag_meanings"].split()[
            summary["variables"]["capacity_bound"]["values"][0]
        ]
        == bound
    )


def test_capacity_flags_override_the_scenario(capsys):
    flags = ["--ttft-p99", "1s", "--rate-max", "50", "--requests", "200", "--replicas", "2", "--policy", "chunked"]
    assert main(["capacity", *flags]) == 0
    text = capsys.readouterr().out
    sc = _apply(DEFAULT, {"engines[llama8b-h100].replicas": 2, "engines[llama8b-h100].batching.policy": "chunked"})
    ref = hf.capacity_search(sc, {"ttft": {"max_s": 1.0}, "rate_max_per_s": 50}, n_requests=200)
    assert f"capacity      {float(ref.capacity_request_per_s[0]):.3f} req/s" in text
    assert "2 replica(s), chunked batching" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "targets: got None; expected at least one of --ttft-p99, --tpot-p99"),
        (["--ttft-p99", "fast"], "--ttft-p99: got 'fast'; expected a positive duration"),
        (["--target", "ttft:p80:1s"], "--target: got 'ttft:p80:1s'; expected a statistic among p50, p90, p95, p99"),
        (["--target", "itl:p99:1s"], "--target: got 'itl:p99:1s'; expected a metric among ttft, tpot, e2e"),
        (["--target", "ttft:1s"], "--target: got 'ttft:1s'; expected METRIC:STAT:MAX"),
        (["--ttft-p99", "1", "--target", "ttft:mean:2"], "--target: got 'ttft:mean:2'; expected one target per"),
        (["--ttft-p99", "1", "--rate-min", "9", "--rate-max", "3"], "--rate-max (capacity.rate_max_per_s): got 3.0"),
        (["--min-slo-attainment", "1.5"], "--min-slo-attainment (capacity.min_slo_attainment): got 1.5"),
        (["--ttft-p99", "1", "--rate", "3"], "--rate: got 3.0; expected no --rate: the capacity search finds the rate"),
        (["--ttft-p99", "1", "--tp", "3"], "--tp (engines[0].parallel.tp): got 3"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else "",
)
def test_capacity_errors_are_one_line_naming_the_flag(flags, message, capsys):
    assert main(["capacity", "--requests", "10", *flags]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"hermes-fast: error: {message}"), err


def test_capacity_without_a_feasible_rate_says_so(capsys):
    assert main(["capacity", "--ttft-p99", "1ms", "--requests", "100"]) == 0
    text = capsys.readouterr().out
    assert "capacity      none: even 0.1 req/s misses the targets" in text
    assert "binding       TTFT p99 <= 1 ms" in text and "# at 0.1 req/s (the bracket's low end):" in text
    assert np.isfinite(float(text.split("TTFT")[-1].split()[0]))


@pytest.mark.parametrize("command", [["run"], ["estimate"], ["capacity", "--ttft-p99", "1s"], ["run", "--tp", "2"]])
def test_a_sweep_file_given_as_a_scenario_says_so(command, capsys):
    sweep_file = EXAMPLES / "sweeps" / "rate_policy.yaml"
    assert main([*command, str(sweep_file)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"hermes-fast: error: scenario: got '{sweep_file}'; expected a scenario file; this is a sweep file (grid): "
        f"`hermes-fast sweep {sweep_file}`"
    ]
