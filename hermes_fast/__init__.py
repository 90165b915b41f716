"""hermes_fast: fast, faithful simulator of multi-stage LLM inference serving.

>>> import hermes_fast as hf
>>> ds = hf.estimate()  # the embedded default scenario, zero-load roofline estimate
>>> ds.tpot_s.dims
('engine',)
>>> sim = hf.simulate(n_requests=200)  # ... and its serving simulation
>>> int(sim.completed_requests.sum())
200
"""

from ._version import __version__ as __version__
from ._version import build_digest
from .calibration import validate as validate  # a module: hf.validate.step_comparison, ...
from .calibration.aiconfigurator import import_aiconfigurator
from .calibration.calibration import Calibration, load_calibration
from .calibration.fit import calibrate
from .calibration.measurements import read_measurements
from .capacity import capacity_search
from .catalog import preset_names
from .config import ConfigError, Scenario
from .estimate import estimate
from .length_draws import length_moments
from .metrics import add_derived, confidence_interval, slo_goodput
from .pareto import pareto
from .plan import launch_commands, plan, plan_table
from .resolve import Catalog, load_scenario
from .simulate import simulate
from .sweep import open_sweep, sweep, sweep_file
from .variables import VARIABLES
from .workload import draw_workload, rng_for

__all__ = [
    "Calibration",
    "Catalog",
    "ConfigError",
    "Scenario",
    "VARIABLES",
    "calibrate",
    "add_derived",
    "build_digest",
    "capacity_search",
    "confidence_interval",
    "draw_workload",
    "estimate",
    "import_aiconfigurator",
    "launch_commands",
    "length_moments",
    "load_calibration",
    "load_scenario",
    "open_sweep",
    "pareto",
    "plan",
    "plan_table",
    "preset_names",
    "read_measurements",
    "rng_for",
    "simulate",
    "slo_goodput",
    "sweep",
    "sweep_file",
]
