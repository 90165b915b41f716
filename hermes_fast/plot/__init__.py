"""Matplotlib helpers for simulation and sweep Datasets; each takes ``ax=None`` and returns the Axes.

Axis labels come from the variables' ``long_name`` and ``units`` attrs (and the selection made, e.g.
``quantile=0.99``). Variables are averaged over ``replicate``; the dims left after that and the helper's own
dims must be the ones the helper draws (select the others first: ``ds.sel(...)``).
"""

# label and path_label are used by name (plot.path_label): re-exported
from .axes import label as label
from .axes import path_label as path_label
from .curves import goodput_vs_slo, latency_throughput, pareto_front
from .distributions import heatmap, latency_cdf, stage_breakdown

__all__ = ["pareto_front", "latency_throughput", "goodput_vs_slo", "stage_breakdown", "latency_cdf", "heatmap"]
