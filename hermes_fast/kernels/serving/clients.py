"""The clients: when requests are sent, under a concurrency cap or in a closed loop, and sessions' turns.

Open arrivals are sent as they arrive, unless ``G_CONCURRENCY`` requests are in flight: then they wait, in
arrival order, for a request to complete (as a benchmark client with a concurrency limit does), and their
latencies start when they are sent (``RF_SENT``). In a closed loop ``G_CONCURRENCY`` clients each send a
request, wait for it to complete (or be rejected or dropped), think for its ``RF_THINK`` seconds and send the
next. A multi-turn session's next turn (``RQ_NEXT_TURN``) is sent ``RF_THINK`` seconds after its previous
turn completes (or is rejected or dropped). Sending is a timer event dispatched by the loop, so this module
depends on nothing above the heaps.
"""

from __future__ import annotations

from .._jit import kernel
from .events import heap_push, timer_payload
from .state import (
    G_CHILD0,
    G_CLOSED,
    G_IN_FLIGHT,
    G_NEXT_ARRIVAL,
    G_SENT,
    HEAP_TIMER,
    RF_THINK,
    RQ_NEXT_TURN,
    TIMER_SEND,
    TIMER_TURN,
)

__all__ = ["client_done"]


@kernel(inline=True)
def client_done(S, i, t):
    """Request i completed, or was rejected or dropped, at t: its client's slot frees; a closed-loop client
    sends its next request after thinking, a waiting arrival is sent now."""
    g = S.glob
    if i >= g[G_CHILD0]:  # (a parallel-reasoning branch is not a request)
        return
    g[G_IN_FLIGHT] -= 1
    nxt = S.req_int[RQ_NEXT_TURN, i]
    if nxt >= 0:  # its session's user reads the answer, thinks, and sends the next turn
        heap_push(S, HEAP_TIMER, t + S.req_float[RF_THINK, i], timer_payload(nxt, TIMER_TURN))
    if g[G_CLOSED] != 0:
        heap_push(S, HEAP_TIMER, t + S.req_float[RF_THINK, i], timer_payload(0, TIMER_SEND))
    elif g[G_SENT] < g[G_NEXT_ARRIVAL]:
        heap_push(S, HEAP_TIMER, t, timer_payload(0, TIMER_SEND))
