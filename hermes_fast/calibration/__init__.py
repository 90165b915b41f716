"""Calibration: measured latencies in, fitted device fields out, and how well the kernels then predict.

One concept per module, lowest first (a module imports only those above it in this list):

- :mod:`~hermes_fast.calibration.measurements`: the measurement schema; reading and writing rows;
- :mod:`~hermes_fast.calibration.calibration`: the :class:`Calibration` object, applying, saving and loading it,
  the shipped calibrations and what a ``calibration=`` argument selects (what :mod:`hermes_fast.resolve` needs);
- :mod:`~hermes_fast.calibration.parameters`: the fitted device fields and which rows identify them;
- :mod:`~hermes_fast.calibration.residuals`: attention residual surfaces;
- :mod:`~hermes_fast.calibration.predict`: each row's latency from the kernels' formulas;
- :mod:`~hermes_fast.calibration.fit`: :func:`calibrate`, the fit and its error report;
- :mod:`~hermes_fast.calibration.reference`: the shipped measured data as rows;
- :mod:`~hermes_fast.calibration.validate`: predictions against measurements, with and without calibrations;
- :mod:`~hermes_fast.calibration.measure_plan`, :mod:`~hermes_fast.calibration.measure_cases`,
  :mod:`~hermes_fast.calibration.measure`: timing kernels and steps with PyTorch on this machine;
- :mod:`~hermes_fast.calibration.aiconfigurator`: rows from NVIDIA aiconfigurator's databases;
- :mod:`~hermes_fast.calibration.serving_runs`: measured serving runs (``hermes_fast/data/serving``), and which
  the simulation can take; :mod:`~hermes_fast.calibration.serving_scenario`: a run's scenario and its harness's
  requests; :mod:`~hermes_fast.calibration.serving`: simulated as their benchmark harness ran them, against the
  measured metrics (``hermes-fast validate --serving``).

This ``__init__`` imports none of them: :mod:`hermes_fast.resolve` needs the Calibration object below the fit,
and the fit needs :mod:`hermes_fast.resolve`'s catalog, so a package that imported its fit would be a cycle.
The public names are on :mod:`hermes_fast` (``hf.calibrate``, ``hf.load_calibration``, ...).
"""
