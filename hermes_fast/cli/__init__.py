"""Command line: ``hermes-fast run|estimate|capacity|plan|sweep|plot|presets|validate|measure|calibrate``. Config
errors print one line on stderr and exit 2; warnings one line each.

One module per command (:mod:`~hermes_fast.cli.run`, :mod:`~hermes_fast.cli.estimate`,
:mod:`~hermes_fast.cli.capacity`, :mod:`~hermes_fast.cli.plan`, :mod:`~hermes_fast.cli.sweep`,
:mod:`~hermes_fast.cli.plot`, :mod:`~hermes_fast.cli.presets`; validate, measure and calibrate in
:mod:`~hermes_fast.cli.calibration`), each with the table it prints; the scenario flags (``--model --tp --rate
...``) in :mod:`~hermes_fast.cli.knobs`, ``--out`` formats in :mod:`~hermes_fast.cli.outputs`; the parser and
:func:`main` in :mod:`~hermes_fast.cli.parser`. Each command imports what it runs inside its function, so
``hermes-fast --help`` starts fast.
"""

from .calibration import print_measured_errors, print_step_comparison, print_validation
from .estimate import print_estimate
from .parser import build_parser, main
from .run import print_simulation

__all__ = [
    "build_parser",
    "main",
    "print_estimate",
    "print_measured_errors",
    "print_simulation",
    "print_step_comparison",
    "print_validation",
]
