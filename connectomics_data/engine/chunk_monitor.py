"""What chunked training (``DATASET.DO_CHUNK_TITLE``) tells the user: which chunk trains, when it
switches, how long each background read took and what it cost, and how much /dev/shm is used.

The trainer calls :meth:`ChunkMonitor.step_started` / :meth:`step_done` around every iteration.
Records it returns go to ``log.jsonl``:

* ``{"event": "chunk_start" | "chunk_switch", "iteration", "slot", "chunk", "read_s", "read_cpu_s", "shm_mb",
  "wait_s"}`` at the first iteration of every slot (``wait_s``: how long that iteration waited
  for data, i.e. for the chunk when its read had not finished);
* ``{"event": "chunk_reads", ...}`` at the end (:meth:`summary`): reads, their wall and CPU time,
  and the iteration time while a read ran against the time otherwise (the read's cost to the
  training loop; on a CPU-bound run it competes with the training threads for cores).

Every periodic training record also gets ``chunk`` (the chunk of that iteration) and ``shm_mb``.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any


class ChunkMonitor:
    """Follows the :class:`~connectomics_data.datasets.TileDataset` behind a training loader.

    Args:
        dataset: the loader's TileDataset (main process: it owns the chunk store).
        start_iteration: the first iteration of this run (resume).
    """

    def __init__(self, dataset: Any, start_iteration: int = 0):
        self.dataset = dataset
        self.schedule = dataset.schedule
        self.slot: int | None = None
        self.chunk: int | None = None
        self._reading = False
        self._last_done: float | None = None
        self._times: dict[bool, list[float]] = {True: [], False: []}
        self.start_iteration = int(start_iteration)

    @classmethod
    def for_loader(cls, loader: Any, start_iteration: int = 0) -> ChunkMonitor | None:
        """A monitor when ``loader`` draws from a TileDataset, else None."""
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "schedule") or not hasattr(dataset, "reading"):
            return None
        return cls(dataset, start_iteration)

    # ------------------------------------------------------------------ messages
    def startup_line(self) -> str:
        """What the loop waits for before its first iteration."""
        slot = self.start_iteration // self.schedule.chunk_iter
        chunk = self.schedule.chunk_of_slot(slot)
        box = self.dataset.chunk_box(chunk)
        store = self.dataset._store
        mb = store.chunk_bytes(chunk) / 2**20 if store is not None else float("nan")
        n = len(self.schedule.chunk_ids)
        return (f"chunked training: {n} chunks, {self.schedule.chunk_iter} iterations each; reading chunk "
                f"{chunk} ({' x '.join(map(str, box.shape))} voxels with the halo, {mb:.1f} MiB) into "
                f"{self.dataset.directory} before the first iteration ...")

    # ------------------------------------------------------------------ per iteration
    def step_started(self) -> None:
        self._reading = self._reading or self.dataset.reading()

    def step_done(self, iteration: int, waited_s: float) -> dict[str, Any] | None:
        """Account iteration ``iteration`` (1-based count after the step); return a switch
        record when it was the first iteration of a slot."""
        now = time.perf_counter()
        elapsed = None if self._last_done is None else now - self._last_done
        self._last_done = now
        reading = self._reading or self.dataset.reading()
        self._reading = self.dataset.reading()  # counts for the next iteration too
        slot = (iteration - 1) // self.schedule.chunk_iter
        record = None
        if slot != self.slot:
            first = self.slot is None
            self.slot, self.chunk = slot, self.schedule.chunk_of_slot(slot)
            stats = self.dataset.slot_stats(slot)
            record = {
                "event": "chunk_switch" if not first else "chunk_start",
                "iteration": iteration, "slot": slot, "chunk": self.chunk,
                "read_s": _r(stats.read_s if stats else math.nan),
                "read_cpu_s": _r(stats.cpu_s if stats else math.nan),
                "shm_mb": round(self.dataset.shm_bytes() / 2**20, 1),
                "wait_s": _r(waited_s),
            }
        elif elapsed is not None:
            # iteration time = data wait + step; the first iteration of a slot (the switch) is
            # reported in its own record, not averaged here
            self._times[reading].append(elapsed)
        return record

    def fields(self) -> dict[str, Any]:
        """Extra fields of a periodic training record."""
        return {"chunk": self.chunk, "shm_mb": round(self.dataset.shm_bytes() / 2**20, 1)}

    # ------------------------------------------------------------------ end of run
    def summary(self) -> dict[str, Any]:
        """The ``chunk_reads`` record: the background reads' cost."""
        reads = [h for h in self.dataset.load_history if not math.isnan(h.read_s)]
        busy, idle = self._times[True], self._times[False]
        iter_busy = statistics.mean(busy) if busy else math.nan
        iter_idle = statistics.mean(idle) if idle else math.nan
        return {
            "event": "chunk_reads",
            "reads": len(reads),
            "read_s_mean": _r(statistics.mean(h.read_s for h in reads) if reads else math.nan),
            "read_cpu_s_total": _r(sum(h.cpu_s for h in reads if not math.isnan(h.cpu_s))),
            "iterations_while_reading": len(busy),
            "iterations_otherwise": len(idle),
            "iteration_s_while_reading": _r(iter_busy),
            "iteration_s_otherwise": _r(iter_idle),
            "slowdown_while_reading": _r(iter_busy / iter_idle - 1) if busy and idle else None,
        }

    @staticmethod
    def summary_line(rec: dict[str, Any]) -> str:
        mean = rec["read_s_mean"] if rec["read_s_mean"] is not None else math.nan
        line = (f"chunk reads: {rec['reads']} in the background, {mean:.2f} s each on average, "
                f"{rec['read_cpu_s_total']:.2f} s CPU in total")
        if rec["slowdown_while_reading"] is not None:
            line += (f"; iterations took {rec['iteration_s_while_reading']:.3f} s while a read ran vs "
                     f"{rec['iteration_s_otherwise']:.3f} s otherwise ({100 * rec['slowdown_while_reading']:+.0f} %; "
                     "DATASET.CHUNK_READ_NICE / CHUNK_READ_THREADS trade this against read time)")
        return line

    def release(self, loader: Any) -> None:
        """Stop the loader's workers and free the chunk slots (before the final validation)."""
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None
        self.dataset.close()


def _r(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)
