"""An app for the e2e test of issue 26: four worker processes (multiprocessing, fork) pass jobs
down a pipeline and record metrics and workflow transitions through agent.emit, each into its own
file. Worker k moves each job from state STATES[k - 1] to STATES[k], handing it on through a
queue, so every workflow is moved by all four processes in turn; meanwhile each worker bumps
counters (its own and one shared by all), sets gauges and records latencies from a known
distribution (multiples of 1/64, so every sum is exact in floating point). No worker calls
``emit.shutdown()``: what the last interval holds is written as the process ends.

Each worker saves what it recorded to ``oracle-<k>.json`` (series totals, last gauge values,
every histogram value) for the test to compare with the database.

    python -m tests.e2e.apps.metrics_app --out DIR --workflows 100
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import time
from collections import defaultdict
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from agent import emit

STATES = ("created", "queued", "running", "done")
WORKERS = len(STATES)
DONE = None  # the end-of-stream marker on a queue


def key(name: str, attributes: dict[str, Any]) -> str:
    return json.dumps([name, attributes], sort_keys=True)


class Oracle:
    """What one worker recorded, per series."""

    def __init__(self) -> None:
        self.counters: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, list[float]] = defaultdict(list)

    def counter(self, name: str, value: float, **attributes: Any) -> None:
        emit.counter(name, value, **attributes)
        self.counters[key(name, attributes)] += value

    def gauge(self, name: str, value: float, **attributes: Any) -> None:
        emit.gauge(name, value, **attributes)
        self.gauges[key(name, attributes)] = value

    def histogram(self, name: str, value: float, **attributes: Any) -> None:
        emit.histogram(name, value, **attributes)
        self.histograms[key(name, attributes)].append(value)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"counters": self.counters, "gauges": self.gauges,
                                    "histograms": self.histograms}))


def work(k: int, out: Path, inbox: Queue[Any], outbox: Queue[Any] | None, workflows: int) -> None:
    """Worker ``k``: one job at a time from ``inbox`` (worker 0 makes them), a transition, some
    metrics, then the job goes on to ``outbox``."""
    emit.configure(out / f"w{k}.log")
    emit.configure_metrics(interval_s=0.05, **{"service.name": "e2e-pipeline"})
    rnd = random.Random(26 + k)
    oracle = Oracle()
    jobs = (f"job-{i:03d}" for i in range(workflows)) if k == 0 else iter(inbox.get, DONE)
    for job in jobs:
        state = "failed" if k == WORKERS - 1 and int(job[4:]) % 7 == 3 else STATES[k]
        emit.workflow(job, state, from_state=STATES[k - 1] if k else None, workflow_type="job", worker=k)
        for n in range(50):
            oracle.counter("jobs.steps", 1, stage=STATES[k])
            oracle.counter("items", 1 + n % 3, pool="shared")  # one series written by all four processes
        for _ in range(10):
            oracle.gauge("queue.depth", rnd.randint(0, 500), worker=k)
        for _ in range(20):
            latency = round(rnd.lognormvariate(3, 1) * 64) / 64
            oracle.histogram("job.latency_ms", latency, pool="shared")
            oracle.histogram("step.latency_ms", latency * (k + 1), stage=STATES[k])
        time.sleep(0.002)  # work takes time: the values spread over many intervals
        if outbox is not None:
            outbox.put(job)
    if outbox is not None:
        outbox.put(DONE)
    oracle.save(out / f"oracle-{k}.json")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workflows", type=int, default=100)
    a = p.parse_args()
    ctx = multiprocessing.get_context("fork")
    queues: list[Queue[Any]] = [ctx.Queue() for _ in range(WORKERS)]
    procs = [ctx.Process(target=work, args=(k, a.out, queues[k], queues[k + 1] if k + 1 < WORKERS else None,
                                            a.workflows)) for k in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"worker exited with {proc.exitcode}")


if __name__ == "__main__":
    main()
