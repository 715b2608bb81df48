"""Progress of a long job (windows, chunks, files, slabs): one small reporter for every path.

On a terminal it is a tqdm bar (done / total, rate, ETA). When the stream is not a terminal
(logs, CI, tests) it prints one plain line at most every ``interval`` seconds::

    predict img.h5: 120/480 windows (25%), 3.2 windows/s, ETA 1m52s

and, if it printed anything, a last line when closed::

    predict img.h5: 480/480 windows (100%) in 2m30s, 3.2 windows/s

so a short job prints nothing. ``CONNECTOMICS_DATA_PROGRESS=0`` in the environment turns every
reporter off; ``=lines`` forces plain lines even on a terminal.

Usage::

    with Progress(total=len(blocks), desc="blockwise", unit="block") as bar:
        for block in blocks:
            ...
            bar.update(1)
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

ENV = "CONNECTOMICS_DATA_PROGRESS"
DEFAULT_INTERVAL = 5.0
"""Seconds between plain lines when ``interval`` is not given."""


def format_seconds(seconds: float) -> str:
    """``75.3 -> '1m15s'``, ``4000 -> '1h06m40s'``, ``2.5 -> '2.5s'``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Report ``update(n)`` calls against ``total`` units.

    Args:
        total: units of the whole job (None: unknown, no percentage or ETA).
        desc: what is running, shown first ('predict img.h5', 'chunk 3/12').
        unit: singular unit name ('window', 'chunk', 'slab'); an 's' is appended for the rate.
        enabled: False: report nothing (e.g. ranks other than 0).
        interval: seconds between plain lines when the stream is not a terminal (default
            :data:`DEFAULT_INTERVAL`).
        stream: where to write (default: ``sys.stderr``).
        initial: units already done (a resumed job).
        leave: keep the terminal bar after ``close`` (False for nested, per-item bars).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "window", enabled: bool = True,
                 interval: float | None = None, stream: TextIO | None = None, initial: int = 0, leave: bool = True):
        self.total = None if total is None else int(total)
        self.desc = desc
        self.unit = unit
        self.interval = float(DEFAULT_INTERVAL if interval is None else interval)
        self.stream = stream if stream is not None else sys.stderr
        self.n = int(initial)
        self._start_n = self.n
        self._t0 = time.monotonic()
        self._last_line = self._t0
        self._printed = False
        self._bar = None
        self._closed = False
        mode = os.environ.get(ENV, "").strip().lower()
        self.enabled = bool(enabled) and mode not in ("0", "off", "false", "no")
        if not self.enabled:
            return
        isatty = getattr(self.stream, "isatty", None)
        if mode != "lines" and callable(isatty) and isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, initial=self.n, file=self.stream,
                             dynamic_ncols=True, leave=leave)

    # ------------------------------------------------------------------ reporting
    def update(self, n: int = 1) -> None:
        """``n`` more units are done."""
        self.n += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = time.monotonic()
        finished = self.total is not None and self.n >= self.total  # the final line follows
        if now - self._last_line >= self.interval and not finished:
            self._last_line = now
            self._line(now)

    def rate(self, now: float | None = None) -> float:
        """Units per second since the start (units done before a resume not counted)."""
        elapsed = (now if now is not None else time.monotonic()) - self._t0
        return (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0

    def _line(self, now: float, final: bool = False) -> None:
        units = f"{self.unit}s"
        rate = self.rate(now)
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        if final:
            text = f"{self.desc}: {done} {units}{pct} in {format_seconds(now - self._t0)}, {rate:.3g} {units}/s"
        else:
            eta = ""
            if self.total is not None and rate > 0:
                eta = f", ETA {format_seconds(max(0, self.total - self.n) / rate)}"
            text = f"{self.desc}: {done} {units}{pct}, {rate:.3g} {units}/s{eta}"
        print(text, file=self.stream, flush=True)
        self._printed = True

    def close(self) -> None:
        """End the bar; off a terminal, a final line if a line was printed before."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self._printed:
            self._line(time.monotonic(), final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
