"""hermes_fast: fast, faithful simulator of multi-stage LLM inference serving.

>>> import hermes_fast as hf
>>> ds = hf.estimate()          # the embedded default scenario, zero-load roofline estimate
"""

__version__ = "0.1.0"

from .catalog import Catalog, preset_names  # noqa: E402
from .config import ConfigError, Scenario, load_scenario  # noqa: E402
from .estimate import estimate  # noqa: E402
from .variables import VARIABLES  # noqa: E402

__all__ = ["Catalog", "ConfigError", "Scenario", "VARIABLES", "estimate", "load_scenario", "preset_names"]
