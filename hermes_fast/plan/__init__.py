"""Deployment planning: which layout of a model, on which devices and with how many replicas, serves the most
traffic within TTFT and TPOT targets (:func:`plan`), and how to launch it (:func:`launch_commands`).

One concern per module, in the order a plan runs: :mod:`~hermes_fast.plan.search` enumerates the layouts, prunes
them with one vectorised estimate and bounds their throughput; :mod:`~hermes_fast.plan.verify` capacity-searches
the best by simulation; :mod:`~hermes_fast.plan.api` assembles the Dataset, the ranked table and the Pareto front;
:mod:`~hermes_fast.plan.export` writes the launch commands from the stored flag lists.
"""

from .api import plan, plan_front, plan_spec, plan_table, plot_plan, verified_layouts
from .export import EXPORT_STACKS, check_flags, emitted_flags, launch_commands, launch_flags
from .search import PRUNE_REASONS

__all__ = [
    "EXPORT_STACKS",
    "PRUNE_REASONS",
    "check_flags",
    "emitted_flags",
    "launch_commands",
    "launch_flags",
    "plan",
    "plan_front",
    "plan_spec",
    "plan_table",
    "plot_plan",
    "verified_layouts",
]
