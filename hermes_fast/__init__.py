"""hermes_fast: fast, faithful simulator of multi-stage LLM inference serving.

>>> import hermes_fast as hf
>>> ds = hf.estimate()          # the embedded default scenario, zero-load roofline estimate
>>> sim = hf.simulate(n_requests=1000)  # ... and its serving simulation
"""

__version__ = "0.1.0"

from .aiconfigurator import import_aiconfigurator  # noqa: E402
from .calibrate import Calibration, calibrate, load_calibration, read_measurements  # noqa: E402
from .capacity import capacity_search  # noqa: E402
from .catalog import Catalog, preset_names  # noqa: E402
from .config import ConfigError, Scenario, load_scenario  # noqa: E402
from .estimate import estimate  # noqa: E402
from .metrics import add_derived, confidence_interval, slo_goodput  # noqa: E402
from .pareto import pareto  # noqa: E402
from .simulate import simulate  # noqa: E402
from .sweep import open_sweep, sweep, sweep_file  # noqa: E402
from .variables import VARIABLES  # noqa: E402
from .workload import draw_workload, length_moments, rng_for  # noqa: E402

__all__ = [
    "Calibration",
    "Catalog",
    "ConfigError",
    "Scenario",
    "VARIABLES",
    "calibrate",
    "add_derived",
    "capacity_search",
    "confidence_interval",
    "draw_workload",
    "estimate",
    "import_aiconfigurator",
    "length_moments",
    "load_calibration",
    "load_scenario",
    "open_sweep",
    "pareto",
    "preset_names",
    "read_measurements",
    "rng_for",
    "simulate",
    "slo_goodput",
    "sweep",
    "sweep_file",
]
