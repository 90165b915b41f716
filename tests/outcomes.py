"""Test helper: two runs' outcomes agree request by request (exactly) and replica by replica."""

from __future__ import annotations

import numpy as np

from hermes_fast.kernels.serving import Outcome


def assert_same_outcome(a: Outcome, b: Outcome) -> None:
    """Every per-request field equal bit for bit (NaN = NaN), every per-replica accumulator to 1e-12
    (a fast-forwarded span sums its iterations in another order)."""
    for name in Outcome.REQUEST_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in Outcome.REPLICA_FIELDS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, err_msg=name)
