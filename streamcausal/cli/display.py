"""What the commands show: the progress bar (tqdm, fed with Progress events), number formats, tables."""

from __future__ import annotations

import math
import shutil
import sys
import textwrap
import time

from tqdm import tqdm

__all__ = ["ProgressBar", "finite_mean", "format_count", "format_number", "format_rate", "run_summary",
           "table"]

# ----------------------------------------------------------------------------- numbers


def format_number(value, spec: str = ".4g", missing: str = "n/a") -> str:
    """``value`` formatted with ``spec``, or ``missing`` for None/NaN."""
    if value is None:
        return missing
    value = float(value)
    return format(value, spec) if math.isfinite(value) else missing


def format_rate(value) -> str:
    """Steps per second as ``950``, ``12.3k``, ``4.56M``."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "n/a"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def format_count(value) -> str:
    """A count as ``950``, ``9,999``, ``12.3k``, ``4.56M``, ``1G`` (exact below 10,000)."""
    value = int(value)
    if value < 10_000:
        return f"{value:,}"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return str(value)


def finite_mean(values) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def table(headers, rows) -> str:
    """Rows of strings as a plain aligned table (first column left, the others right)."""
    widths = [max(len(str(row[k])) for row in [headers, *rows]) for k in range(len(headers))]

    def line(row):
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(cell).rjust(width) for cell, width in zip(row[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


# ----------------------------------------------------------------------------- progress

# Fields: tqdm's own (percentage, bar, rate_noinv_fmt, remaining, unit) and _Bar's
# (done, total_count: counts as format_count writes them; stats: score and mean SE).
_TERMINAL_FORMAT = "{percentage:5.1f}% |{bar:20}| {done}/{total_count}{unit}  {rate_noinv_fmt}  ETA {remaining}{stats}"
_LINE_FORMAT = "progress: {percentage:5.1f}%  {done}/{total_count}{unit}  {rate_noinv_fmt}  ETA {remaining}{stats}"


class _Bar(tqdm):
    """tqdm with the fields above; with ``lines=True`` it draws nothing itself (ProgressBar writes lines)."""

    monitor_interval = 0  # no monitor thread: updates come from the command's own thread

    def __init__(self, *args, lines=False, **kwargs):
        self.lines = lines
        self.stats = ""
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        fields = super().format_dict
        fields.update(done=format_count(self.n), total_count=format_count(self.total or 0), stats=self.stats)
        return fields

    def display(self, msg=None, pos=None):
        return None if self.lines else super().display(msg, pos)

    def line(self) -> str:
        return self.format_meter(**{**self.format_dict, "bar_format": _LINE_FORMAT, "ncols": None})


def _terminal_shape(_file=None):
    """(columns, rows) for the bar; 100 columns where the terminal does not say (0 counts as unknown)."""
    columns, rows = shutil.get_terminal_size((100, 20))
    return max(20, (columns or 100) - 1), rows or 20


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """A ``progress`` callback that shows :class:`~streamcausal.progress.Progress` events on stderr.

    On a terminal: a tqdm bar, redrawn at most ten times a second, with percent, steps
    done, steps per second, ETA, and the reporting seed's score and mean SE. Otherwise
    (a log file, a pipe): a plain ``progress: ...`` line with the same fields at every
    further 10 %, at least every 30 s, and at the end, so that logs stay readable.
    Rates count only the steps done by this process: with ``resuming``, the steps a
    seed's first report brings (done before the resume) are left out.

    A ``"compiling"`` event (Numba's cache did not hold the kernels) prints
    :data:`COMPILING` once; the rate and ETA then count from the first chunk's report,
    whose steps are left out of the rate, so the compile time never enters an ETA.
    ``clock`` (seconds, like ``time.time``) is for tests.
    """

    LOG_SECONDS = 30.0
    COMPILING = ("compiling the Numba kernels (the first run after an install or upgrade; "
                 "later runs load them from the cache) ...")

    def __init__(self, stream=None, *, enabled=True, resuming=False, unit="steps", clock=time.time):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.terminal = _is_terminal(self.stream)
        self.resuming = resuming
        self.unit = unit
        self.clock = clock
        self.bar = None
        self.seen = set()
        self.next_tenth = 1
        self.last_line = clock()
        self.logged = None
        self.began = clock()  # tqdm's clock
        self.compiled = False  # a "compiling" event came: the clock restarts at the first chunk

    def _open(self, total):
        columns, rows = _terminal_shape()
        bar = _Bar(total=total, file=self.stream, unit=" " + self.unit, unit_scale=True,
                   bar_format=_TERMINAL_FORMAT, mininterval=0.1, miniters=1, smoothing=0,
                   ncols=columns, nrows=rows, leave=self.terminal, lines=not self.terminal)
        if self.terminal:
            bar.dynamic_ncols = _terminal_shape  # follow the terminal's width on every redraw
        bar._time = self.clock
        bar.start_t = bar.last_print_t = self.began  # the rate counts from the start of the command's work
        return bar

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if event.phase == "compiling":
            if not self.compiled and self.bar is None:
                self.compiled = True
                self.stream.write(self.COMPILING + "\n")
                self.stream.flush()
            return
        first = self.bar is None
        if first:
            if self.compiled:  # the compile time is no part of the rate: count from this first chunk
                self.began = self.last_line = self.clock()
            self.bar = self._open(event.steps_total)
        bar = self.bar
        step = event.steps_done - bar.n
        if (first and self.compiled) or (self.resuming and event.seed not in self.seen):
            self.seen.add(event.seed)
            bar.initial += max(0, step)  # tqdm's rate is (n - initial) / elapsed
        bar.stats = "".join([
            f"  score {event.score:.4f}" if event.score is not None else "",
            f"  SE {event.mean_se:.2e}" if event.mean_se is not None else "",
        ])
        bar.update(step)
        if not self.terminal:
            tenth = int(event.fraction * 10 + 1e-9)
            finished = event.steps_done >= event.steps_total
            if first and self.compiled and not finished:
                return  # no rate yet: the clock has just started
            if tenth >= self.next_tenth or finished or self.clock() - self.last_line >= self.LOG_SECONDS:
                self._line()
                self.next_tenth = max(self.next_tenth, tenth + 1)

    def _line(self):
        state = (self.bar.n, self.bar.total)
        if state == self.logged:
            return
        self.stream.write(self.bar.line() + "\n")
        self.stream.flush()
        self.last_line = self.clock()
        self.logged = state

    def close(self) -> None:
        """End the bar's line (on a terminal) or log the last state when it was not logged yet."""
        if self.bar is None:
            return
        if not self.terminal:
            self._line()
        self.bar.close()
        self.bar = None


# ----------------------------------------------------------------------------- the run's summary


def _steps_this_session(result, chunk_steps, n_steps):
    """Steps simulated in this process (a resumed seed started part way)."""
    resumed = int(result.parameters.get("resumed_from_chunk", 0) or 0)
    return max(0, result.n_steps - min(n_steps, resumed * chunk_steps))


def run_summary(result, A, *, chunk_steps, n_steps, target_se=None) -> str:
    """The table printed after a run: per seed and merged, score, mean SE, samples, steps, throughput."""
    several = len(result.per_seed) > 1
    headers = ["seed", "score", "mean SE", "seed-to-seed SE", "samples", "steps", "seconds", "steps/s"]
    rows = []
    fresh_total = 0
    for seed, seed_result in result.per_seed.items():
        fresh = _steps_this_session(seed_result, chunk_steps, n_steps)
        fresh_total += fresh
        rows.append([
            str(seed), format_number(seed_result.score(A), ".6f"),
            format_number(finite_mean(seed_result.stderr), ".3e"), "",
            f"{seed_result.n_samples:,}", f"{seed_result.n_steps:,}", f"{seed_result.seconds:.2f}",
            format_rate(fresh / seed_result.seconds if seed_result.seconds > 0 else None),
        ])
    if several:
        rows.append([
            "merged", format_number(result.score(A), ".6f"),
            format_number(finite_mean(result.stderr), ".3e"),
            format_number(finite_mean(result.stderr_between_seeds), ".3e"),
            f"{result.n_samples:,}", f"{result.n_steps:,}", f"{result.seconds:.2f}",
            format_rate(fresh_total / result.seconds if result.seconds > 0 else None),
        ])
    else:
        headers.remove("seed-to-seed SE")
        for row in rows:
            del row[3]
    lines = [table(headers, rows)]
    lines.append(textwrap.fill(
        "score: correlation of the correlation estimate with the true A over all edges; "
        "mean SE: mean per-edge standard error of the effect estimate, from the moments"
        + ("; seed-to-seed SE: the same, from the spread between seeds" if several else "")
        + "; steps/s: steps simulated by this command (a resumed run counts only the new ones) "
        "per second of wall time", width=88))
    if fresh_total < result.n_steps:
        lines.append(f"resumed: {fresh_total:,} of the {result.n_steps:,} steps were simulated now; "
                     "steps/s counts only those")
    if target_se is not None:
        mean_se = finite_mean(result.stderr)
        lines.append(
            f"stopping rule: target mean SE {target_se:g} ({'reached' if mean_se <= target_se else 'not reached'}: "
            f"{format_number(mean_se, '.3e')}); steps per seed: "
            + ", ".join(f"{seed}: {r.n_steps:,}" for seed, r in result.per_seed.items())
        )
    return "\n".join(lines)
