"""Pre-drawn, vectorised workloads: one replicate's requests (arrival times, classes, token lengths, sessions and
their prefixes, trace block hashes) as a :class:`Draws` struct of arrays.

Everything random about a run is drawn here, up front, from one ``numpy.random.Generator`` per
(grid point, replicate) (DESIGN 7.5), so the event loop itself is deterministic and a run is
reproducible from its seed whatever the chunking or worker count. The laws themselves live in
:mod:`hermes_fast.arrivals` (when requests are sent) and :mod:`hermes_fast.length_draws` (how long they are);
sessions' layout and prefix popularity in :mod:`hermes_fast.sessions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrivals import draw_arrivals, draw_gamma, think_times, trace_times
from .config.base import ConfigError
from .config.workload import RequestClass
from .length_draws import draw_lengths, hash_column, int_column, read_rows, zipf_draws
from .sessions import session_layout

__all__ = [
    "Draws",
    "draw_workload",
    "rng_for",
    "classes_of",
]

MAX_SPAN_S = 2.0**32  # simulated seconds the arrivals may span: float64 times there resolve 2^-20 s (about 1 us)


def rng_for(seed: int, point: int = 0, replicate: int = 0) -> np.random.Generator:
    """The generator of one (grid point, replicate): independent streams by global index, never by chunk.

    ``PCG64(SeedSequence(seed, spawn_key=(point, replicate)))``: what :func:`hermes_fast.simulate` and
    :func:`hermes_fast.sweep` draw a replicate's workload (and stage values) from, so a run is reproducible
    from its seed whatever the chunking, worker count or order of completion.

    Parameters
    ----------
    seed : int
        The run's seed (>= 0).
    point : int, default 0
        Flat C-order index of the grid point.
    replicate : int, default 0
        Replicate index.

    Returns
    -------
    numpy.random.Generator

    Examples
    --------
    >>> a = hf.rng_for(1, point=2).random(3)
    >>> b = hf.rng_for(1, point=2).random(3)
    >>> c = hf.rng_for(1, point=2, replicate=1).random(3)
    >>> bool((a == b).all()), bool((a == c).any())
    (True, False)
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(point, replicate))))


@dataclass(frozen=True)
class Draws:
    """One replicate's pre-drawn requests, sorted by arrival (struct of arrays)."""

    arrival_s: np.ndarray  # float64[n]; a closed loop: 0 for its clients' first requests, inf for the rest
    request_class: np.ndarray  # int64[n]
    prompt_tokens: np.ndarray  # int64[n]
    output_tokens: np.ndarray  # int64[n]
    route_u: np.ndarray  # float64[2, n]: uniforms for random replica choices (entry pool, next pool)
    think_s: np.ndarray | None = None  # float64[n]: a closed loop's think time after each request completes
    concurrency: int = 0  # most requests in flight (0: no cap); a closed loop's clients
    closed: bool = False  # the clients send their next request when the previous completes (and they thought)
    # prefixes, sessions and trace block hashes (None: none; :mod:`hermes_fast.sessions` makes the block chains)
    stream: np.ndarray | None = None  # int64[n]: the token stream (session) each request belongs to
    prefix_key: np.ndarray | None = None  # int64[n]: its shared prefix (-1: none)
    prefix_tokens: np.ndarray | None = None  # int64[n]: tokens of that prefix at the start of its prompt
    turn: np.ndarray | None = None  # int64[n]: its turn in its session (0: the first)
    next_turn: np.ndarray | None = None  # int64[n]: the request of its session's next turn (-1: none)
    prev_turn: np.ndarray | None = None  # int64[n]: ... of the previous turn (-1: none)
    hash_ids: tuple[np.ndarray, np.ndarray] | None = None  # a trace's prompt block hashes: (offsets[n + 1], ids)
    hash_block_tokens: int = 512  # prompt tokens per hash id

    @property
    def cached(self) -> bool:
        """The requests share prompt blocks (prefixes, sessions or trace hashes): the prefix cache has work."""
        return self.stream is not None

    @property
    def sessions(self) -> bool:
        """Some requests are later turns of sessions (sent when the previous turn's answer is read)."""
        return self.next_turn is not None and bool((self.next_turn >= 0).any())


def shares_blocks(workload) -> bool:
    """Whether the workload's requests share prompt blocks (prefixes, sessions, or a trace's hash ids): what a
    prefix cache can reuse, as :attr:`Draws.cached` says of its draws."""
    arr = workload.arrival
    traced = arr.process == "trace" and arr.trace.hash_ids_column is not None
    return traced or any(c.prefix is not None or c.session is not None for c in classes_of(workload))


def classes_of(workload) -> tuple[RequestClass, ...]:
    """The workload's request classes (one from the fixed prompt/output lengths when none are given)."""
    if workload.classes:
        return workload.classes
    return (RequestClass(prompt_tokens=workload.prompt_tokens, output_tokens=workload.output_tokens),)


def draw_workload(workload, n: int, rng: np.random.Generator) -> Draws:
    """Draw ``n`` requests of ``workload`` (arrivals, classes, lengths, routing uniforms) from ``rng``.

    What :func:`hermes_fast.simulate` runs through the serving loop, drawn up front.

    Parameters
    ----------
    workload : Workload
        A scenario's ``workload`` (:class:`~hermes_fast.config.Workload`): the arrival process at
        ``rate_per_s`` requests/s (or a trace replay), the request classes with their weights and prompt and
        output lengths in tokens.
    n : int
        Requests to draw.
    rng : numpy.random.Generator
        The stream to draw from (:func:`rng_for`).

    Returns
    -------
    Draws
        Arrays of length ``n`` sorted by arrival: ``arrival_s`` (arrival times, seconds), ``request_class``,
        ``prompt_tokens`` and ``output_tokens`` (tokens), and ``route_u`` (2 x n uniforms for random replica
        choices).

    Raises
    ------
    ConfigError
        For a trace or empirical length CSV that is missing or malformed, or a length law that cannot be drawn
        (see :func:`length_moments`).

    Examples
    --------
    >>> sc = hf.load_scenario()  # Poisson arrivals at 10 requests/s, 1024-token prompts, 256-token answers
    >>> draws = hf.draw_workload(sc.workload, 5, hf.rng_for(1))
    >>> draws.arrival_s.round(3).tolist()  # seconds
    [0.06, 0.317, 0.384, 0.493, 0.658]
    >>> draws.prompt_tokens.tolist()
    [1024, 1024, 1024, 1024, 1024]
    """
    classes = classes_of(workload)
    arr = workload.arrival
    if any(c.prefix is not None or c.session is not None for c in classes):
        return _draw_sessions(workload, classes, n, rng)
    trace_prompt = trace_output = None
    trace_hashes = None
    if arr.process == "trace":
        fp = "workload.arrival.trace"
        rows = read_rows(arr.trace.path, f"{fp}.path")
        times, order = trace_times(arr.trace, rows, fp)
        rows = [rows[i] for i in order]
        if arr.trace.rescale_to_rate and times.size > 1 and times[-1] > 0:
            times = times * ((times.size - 1) / times[-1]) / workload.rate_per_s
        period = times[-1] + (times[-1] / (times.size - 1) if times.size > 1 else 1.0 / workload.rate_per_s)
        reps = np.arange(n) // times.size
        arrival = times[np.arange(n) % times.size] + reps * period
        if arr.trace.prompt_column is not None:
            trace_prompt = int_column(rows, arr.trace.prompt_column, arr.trace.path, f"{fp}.prompt_column")
        if arr.trace.output_column is not None:
            trace_output = int_column(rows, arr.trace.output_column, arr.trace.path, f"{fp}.output_column")
        if arr.trace.hash_ids_column is not None:
            trace_hashes = hash_column(rows, arr.trace.hash_ids_column, arr.trace.path, f"{fp}.hash_ids_column")
    elif arr.process == "closed":  # the clients send their first requests at once, the rest as they complete
        arrival = np.where(np.arange(n) < arr.concurrency, 0.0, np.inf)
    else:
        arrival = draw_arrivals(arr, workload.rate_per_s, n, rng)
    weights = np.array([c.weight for c in classes])
    if len(classes) == 1:
        cls = np.zeros(n, dtype=np.int64)
    else:
        cls = rng.choice(len(classes), size=n, p=weights / weights.sum()).astype(np.int64)
    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    for c, rc in enumerate(classes):
        idx = np.flatnonzero(cls == c)
        base = f"workload.classes[{c}]" if workload.classes else "workload"
        prompt[idx] = draw_lengths(rc.prompt_tokens, idx.size, rng, f"{base}.prompt_tokens")
        output[idx] = draw_lengths(rc.output_tokens, idx.size, rng, f"{base}.output_tokens")
    if trace_prompt is not None:
        prompt = trace_prompt[np.arange(n) % trace_prompt.size]
    if trace_output is not None:
        output = trace_output[np.arange(n) % trace_output.size]
    route_u = rng.random((2, n))
    think = None
    closed = arr.process == "closed"
    if closed:
        think = think_times(arr, n, rng)
    concurrency = arr.concurrency if closed else (arr.max_concurrency or 0)
    arrival = np.ascontiguousarray(arrival, dtype=np.float64)
    _check_span(workload, arrival, think, n)
    if trace_hashes is not None:  # the trace's rows repeat: so do their hashes (a replay's requests are new ones)
        rows_of = np.arange(n) % len(trace_hashes)
        counts = np.array([trace_hashes[k].size for k in rows_of], dtype=np.int64)
        ids = np.concatenate([trace_hashes[k] for k in rows_of]) if n else np.zeros(0, dtype=np.int64)
        h_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        none = np.full(n, -1, dtype=np.int64)
        return Draws(
            arrival, cls, prompt, output, route_u, think, concurrency, closed, stream=np.arange(n, dtype=np.int64),
            prefix_key=none, prefix_tokens=np.zeros(n, dtype=np.int64), turn=np.zeros(n, dtype=np.int64),
            hash_ids=(h_off, ids), hash_block_tokens=arr.trace.hash_block_tokens,
        )  # fmt: skip
    return Draws(arrival, cls, prompt, output, route_u, think, concurrency, closed)


def _check_span(workload, arrival: np.ndarray, think: np.ndarray | None, n: int) -> None:
    """ConfigError when the arrivals (a closed loop: its clients' think times) span more than :data:`MAX_SPAN_S`:
    beyond it the loop's float64 times cannot resolve a latency to a microsecond (at 1e300 s every latency is 0)."""
    arr = workload.arrival
    finite = arrival[np.isfinite(arrival)]
    span = float(finite.max()) if finite.size else 0.0
    if think is not None:  # each client's requests follow one another, a think time apart
        span = max(span, float(think.sum()) / arr.concurrency)
    if span <= MAX_SPAN_S:
        return
    if arr.process == "closed":
        where, value = "workload.arrival.think_time_s", arr.think_time_s
    elif arr.process == "trace":
        rescaled = arr.trace.rescale_to_rate
        where = "workload.rate_per_s" if rescaled else "workload.arrival.trace.time_scale"
        value = workload.rate_per_s if rescaled else arr.trace.time_scale
    else:
        where, value = "workload.rate_per_s", workload.rate_per_s
    raise ConfigError(
        where, value,
        f"a value for which the {n} arrivals span at most {MAX_SPAN_S:.3g} s of simulated time (they span "
        f"{span:.3g} s, where float64 times resolve latencies only to {span * 2.0**-52:.2g} s)",
    )  # fmt: skip


def _draw_sessions(workload, classes, n: int, rng: np.random.Generator) -> Draws:
    """Draws of a workload with shared prefixes or multi-turn sessions: arrivals are sessions (a class without
    ``session`` has one turn); turn k's prompt is its prefix, the earlier turns' prompts and answers, and its
    own user tokens; later turns are sent a think time after the previous answer (arrival inf until then)."""
    arr = workload.arrival
    fp = "workload.arrival"
    if arr.process in ("trace", "closed") or arr.max_concurrency is not None:
        key = "process" if arr.max_concurrency is None else "max_concurrency"
        raise ConfigError(
            f"{fp}.{key}",
            getattr(arr, key),
            "an open arrival process without max_concurrency with prefixes or sessions",
        )
    units = draw_arrivals(arr, workload.rate_per_s, n, rng)  # (at most n sessions)
    weights = np.array([c.weight for c in classes])
    ucls = (
        np.zeros(n, dtype=np.int64)
        if len(classes) == 1
        else rng.choice(len(classes), size=n, p=weights / weights.sum()).astype(np.int64)
    )
    turns = np.ones(n, dtype=np.int64)
    for c, rc in enumerate(classes):
        if rc.session is not None:
            idx = np.flatnonzero(ucls == c)
            turns[idx] = draw_lengths(rc.session.turns, idx.size, rng, f"workload.classes[{c}].session.turns")
    sess, turn, index = session_layout(turns, n)
    n_sess = int(sess.max()) + 1 if n else 0
    cls = ucls[sess]
    user = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    think = np.zeros(n)
    prefix_of = np.full(n_sess, -1, dtype=np.int64)  # each session's prefix (a global key) and its length
    prefix_len = np.zeros(n_sess, dtype=np.int64)
    key0 = 0
    for c, rc in enumerate(classes):
        base = f"workload.classes[{c}]" if workload.classes else "workload"
        idx = np.flatnonzero(cls == c)
        user[idx] = draw_lengths(rc.prompt_tokens, idx.size, rng, f"{base}.prompt_tokens")
        output[idx] = draw_lengths(rc.output_tokens, idx.size, rng, f"{base}.output_tokens")
        if rc.session is not None:
            think[idx] = draw_gamma(rc.session.think_time_s, rc.session.think_time_cv, idx.size, rng)
        if rc.prefix is not None:
            px = rc.prefix
            lengths = draw_lengths(px.tokens, px.distinct, rng, f"{base}.prefix.tokens")
            s_idx = np.flatnonzero(ucls[:n_sess] == c)
            k = zipf_draws(1, px.distinct, px.zipf_alpha, s_idx.size, rng) - 1  # (prefix 0 the most popular)
            prefix_of[s_idx] = key0 + k
            prefix_len[s_idx] = lengths[k]
            key0 += px.distinct
    # prompts: in session-major order, turn k's = prefix + sum of earlier (user + output) + its user tokens
    sm = index  # the request at each session-major position
    u_sm, o_sm, s_sm = user[sm], output[sm], sess[sm]
    before = np.cumsum(u_sm + o_sm) - (u_sm + o_sm)  # tokens of earlier requests, all sessions
    start = np.zeros(n_sess, dtype=np.int64)
    first = np.flatnonzero(turn[sm] == 0)
    start[s_sm[first]] = before[first]
    prompt_sm = prefix_len[s_sm] + before - start[s_sm] + u_sm
    prompt = np.empty(n, dtype=np.int64)
    prompt[sm] = prompt_sm
    nxt_sm = np.where(np.append(s_sm[1:] == s_sm[:-1], False), np.append(sm[1:], -1), -1)
    next_turn = np.empty(n, dtype=np.int64)
    next_turn[sm] = nxt_sm
    prev_turn = np.full(n, -1, dtype=np.int64)
    has = next_turn >= 0
    prev_turn[next_turn[has]] = np.flatnonzero(has)
    arrival = np.where(turn == 0, units[np.minimum(sess, n - 1)], np.inf)
    return Draws(
        np.ascontiguousarray(arrival, dtype=np.float64), cls, prompt, output, rng.random((2, n)), think,
        stream=sess.astype(np.int64), prefix_key=prefix_of[sess], prefix_tokens=prefix_len[sess],
        turn=turn.astype(np.int64), next_turn=next_turn, prev_turn=prev_turn,
    )  # fmt: skip
