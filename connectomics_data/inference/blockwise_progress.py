"""Progress of a blockwise run: a daisy progress observer (blocks done / total, blocks/s, ETA)."""

from __future__ import annotations

import sys
import time


class BlockProgress:
    """daisy progress observer: blocks done / total, blocks per second and ETA.

    On a terminal a tqdm bar; otherwise one line on ``stream`` when daisy reports a change (a
    block started or finished), at most every ``interval`` seconds, and at the end. Blocks
    skipped because an earlier run finished them count as done but not towards the rate.
    """

    def __init__(self, label: str, stream=None, interval: float = 10.0, bar: bool | None = None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = float(interval)
        isatty = getattr(self.stream, "isatty", None)
        self.use_bar = bool(isatty and isatty()) if bar is None else bool(bar)
        self.t0 = time.monotonic()
        self.last = -float("inf")
        self.last_line = ""
        self.bar = None

    @staticmethod
    def _counts(states) -> tuple[int, int, int, int, int]:
        total = done = skipped = failed = running = 0
        for s in states.values():
            total += int(s.total_block_count)
            done += int(s.completed_count)
            skipped += int(s.skipped_count)
            failed += int(s.failed_count)
            running += int(s.processing_count)
        return total, done, skipped, failed, running

    def line(self, states, final: bool = False) -> str:
        total, done, skipped, failed, running = self._counts(states)
        elapsed = time.monotonic() - self.t0
        fresh = done - skipped
        rate = fresh / elapsed if elapsed > 0 else 0.0
        left = total - done - failed
        if final or left <= 0:
            eta = "finished" if not failed and left <= 0 else "stopped"
        elif rate > 0:
            eta = f"ETA {_hms(left / rate)}"
        else:
            eta = "ETA ?"
        parts = [f"{self.label}: {done}/{total} blocks"]
        if skipped:
            parts.append(f"{skipped} done earlier")
        if failed:
            parts.append(f"{failed} failed")
        parts.append(f"{running} running, {rate:.2f} blocks/s, {_hms(elapsed)} elapsed, {eta}")
        return ", ".join(parts)

    def _show(self, states, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if self.use_bar:
            total, done, skipped, failed, _ = self._counts(states)
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=self.label, unit="block", file=self.stream, dynamic_ncols=True)
            if done > self.bar.n:
                self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"{skipped} done earlier, {failed} failed", refresh=False)
            if final:
                self.bar.close()
            return
        if force or now - self.last >= self.interval:
            text = self.line(states, final)
            if text != self.last_line:
                print(text, file=self.stream, flush=True)
            self.last, self.last_line = now, text

    def on_start(self, states) -> None:
        self.t0 = time.monotonic()
        self._show(states, force=True)

    def on_progress(self, states) -> None:
        self._show(states)

    def on_finish(self, states) -> None:
        self._show(states, force=True, final=True)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
