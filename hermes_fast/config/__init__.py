"""Scenario configuration: frozen dataclasses per concern, loaded from YAML or dicts with dotted-path errors."""

from .base import ConfigError, deep_merge, field_docs, from_mapping, to_mapping
from .efficiency import AttentionResidual, Efficiency
from .files import load_yaml
from .hardware import DTYPE_BYTES, DTYPES, Device, Link, MemoryTier, PeakFlops
from .model import MLA, Indexer, LinearAttention, Model, MoE
from .pipeline import KvTier, Stage, VectorIndex
from .scenario import Dtypes, Engine, Parallel, Scenario, Workload, read_scenario
from .serving import Batching, Serving, Slo
from .sweep import CapacitySearch, LatencyTarget, SweepSpec
from .workload import Arrival, Length, Prefix, RequestClass, Session, Trace

__all__ = [
    "ConfigError",
    "field_docs",
    "from_mapping",
    "load_yaml",
    "deep_merge",
    "to_mapping",
    "DTYPE_BYTES",
    "DTYPES",
    "AttentionResidual",
    "Device",
    "Efficiency",
    "Link",
    "MemoryTier",
    "PeakFlops",
    "Indexer",
    "LinearAttention",
    "MLA",
    "Model",
    "MoE",
    "Dtypes",
    "Engine",
    "Parallel",
    "Scenario",
    "Workload",
    "read_scenario",
    "KvTier",
    "Stage",
    "VectorIndex",
    "Batching",
    "Serving",
    "Slo",
    "Arrival",
    "Length",
    "Prefix",
    "RequestClass",
    "Session",
    "Trace",
    "CapacitySearch",
    "LatencyTarget",
    "SweepSpec",
]
