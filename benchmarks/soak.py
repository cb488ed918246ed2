"""Soak: a steady offered rate for minutes, with failures, retries and chains (issue 27).

    python -m benchmarks.soak --broker tansu|kafka [--rate 1000] [--minutes 10] [--out NAME]

On a broker this script starts (Tansu, or one Apache Kafka node from
taskstream.cli.apache_kafka, as ``taskstream dev --broker kafka`` runs it), one worker
(concurrency 4, dev's default) and one materializer process. A sender thread offers --rate
tasks/s: 90% ``soak.add``, 4% ``soak.fail`` (a FAILURE), 4% ``soak.retry_once`` (a RETRY,
then a SUCCESS 1 s later) and 2% a chain of two ``soak.add``. A reader follows the results
topic; per --window seconds the report gives the tasks offered, the outcomes finished, the
queue wait of the first attempts started (a run's start minus its enqueue: p50, p99, max; a
retry's wait would include its countdown) and the RSS of the worker, the materializer and the
broker. After the offered time it waits for the backlog (up to --drain seconds, or until
nothing arrives for 30 s). The report: benchmarks/reports/<out>.json and .md.

Measured on Tansu 0.6 (issue 27): flat for ~90 s at 1,000 tasks/s, then a collapse.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.common import percentile
from benchmarks.soak_app import build_app
from taskstream import App, chain
from taskstream.cli.apache_kafka import KafkaCluster
from taskstream.cli.broker_watch import Watcher, watch_embedded_broker
from taskstream.cli.embedded_broker import EmbeddedBroker
from taskstream.kafka.topics import results_topic, task_topic

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "benchmarks" / "reports"
APP_SPEC = "benchmarks.soak_app:app"


@dataclass
class Window:
    offered: int = 0
    finished: int = 0  # final outcomes (SUCCESS, FAILURE, REVOKED), by their finish time
    waits_ms: list[float] = field(default_factory=list)  # runs started in the window
    rss_mb: dict[str, float] = field(default_factory=dict)  # sampled at the window's end
    watch_late_s: float | None = None  # dev's watch: the tasks' last wait it saw in the window


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Soak:
    def __init__(self, bootstrap: str, workdir: Path, rate: int, window_s: float) -> None:
        prefix = f"soak-{uuid.uuid4().hex[:8]}"
        self.settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "topic_prefix": prefix,
            "store": f"sqlite:///{workdir}/results.db",
        }
        self.env = {
            **os.environ,
            **{f"TASKSTREAM_{k.upper()}": str(v) for k, v in self.settings.items()},
            "PYTHONPATH": str(REPO),
        }
        self.rate, self.window_s = rate, window_s
        self.windows: dict[int, Window] = defaultdict(Window)
        self.started = 0.0  # wall clock, s
        self.offered = self.finished = 0
        self.expected = 1  # final outcomes to come: the warm-up task's, then one per task sent
        self.warnings: list[str] = []  # what dev's watch of its broker said, and when
        self._watcher: Watcher | None = None
        self._stop = threading.Event()

    def window(self, wall_s: float) -> Window:
        return self.windows[max(0, int((wall_s - self.started) // self.window_s))]

    def send(self, app: App, seconds: float) -> None:
        """Offer `rate` tasks/s for `seconds` (behind schedule: as fast as it can)."""
        add, fail, retry_once = (app.tasks[f"soak.{n}"] for n in ("add", "fail", "retry_once"))
        chooser = random.Random(27)
        begin = time.perf_counter()
        n = 0
        while not self._stop.is_set() and time.perf_counter() - begin < seconds:
            ahead = begin + n / self.rate - time.perf_counter()
            if ahead > 0.0005:
                time.sleep(ahead)
            roll = chooser.random()
            if roll < 0.90:
                add.delay(n, 1)
            elif roll < 0.94:
                fail.delay(n)
            elif roll < 0.98:
                retry_once.delay(n)
            else:
                chain(add.s(n, 1), add.s(1)).apply_async()
                self.expected += 1  # each step has its outcome
            self.window(time.time()).offered += 1
            self.offered += 1
            self.expected += 1
            n += 1

    def read(self, app: App) -> None:
        """Follow the results topic from its start; bin each run by its times."""
        topic = results_topic(app.settings.topic_prefix)
        consumer = Consumer({"bootstrap.servers": app.settings.bootstrap_servers,
                             "group.id": f"soak-reader-{uuid.uuid4().hex}",
                             "enable.auto.commit": False})  # fmt: skip
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(app.settings.partitions)]
        )
        try:
            while not self._stop.is_set():
                for m in consumer.consume(5000, 0.2):
                    if m.error() is not None or m.value() is None:
                        continue
                    event = app.envelopes.decode_result(m.value())  # type: ignore[arg-type]
                    if event.attempt == 1:  # a retry's wait includes its countdown
                        wait_ms = (event.started_at - event.enqueued_at) / 1000
                        self.window(event.started_at / 1e6).waits_ms.append(max(0.0, wait_ms))
                    if event.status.is_final:
                        self.window(event.finished_at / 1e6).finished += 1
                        self.finished += 1
        finally:
            consumer.close()

    def watch_as_dev(self, app: App) -> Watcher:
        """The watch `taskstream dev` runs on its embedded broker: does it warn in time?"""

        def said(text: str) -> None:
            self.warnings.append(f"at {time.time() - self.started:.0f} s: {text}")
            print(f"  dev's watch: {self.warnings[-1]}", flush=True)

        s = app.settings
        topics = [task_topic(s.topic_prefix, q) for q in app.queues]
        return watch_embedded_broker(s, s.bootstrap_servers or "", topics, said)

    def run(
        self, seconds: float, drain_s: float, pids: dict[str, int], watch: bool = False
    ) -> list[dict[str, Any]]:
        """Offer the rate for ``seconds``, then wait for the backlog; the windows' rows."""
        app = build_app(**self.settings)
        app.ensure_topics()
        spawn = {"worker": ["worker", APP_SPEC, "--concurrency", "4"],
                 "materializer": ["materialize", "--app", APP_SPEC]}  # fmt: skip
        children = {
            name: subprocess.Popen(
                [sys.executable, "-m", "taskstream.cli", *command],
                env=self.env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, command in spawn.items()
        }
        pids = {**pids, **{name: p.pid for name, p in children.items()}}
        threads: list[threading.Thread] = []
        watcher: Watcher | None = None
        try:
            app.tasks["soak.add"].delay(0, 0).get(timeout=120)  # worker and materializer up
            self.started = time.time()
            watcher = self.watch_as_dev(app) if watch else None
            self._watcher = watcher
            threads = [
                threading.Thread(target=self.read, args=(app,), daemon=True),
                threading.Thread(target=self.send, args=(app, seconds), daemon=True),
            ]
            for t in threads:
                t.start()
            self._sample(pids, threads[1], drain_s)
        finally:
            self._stop.set()
            if watcher is not None:
                watcher.stop()
            for t in threads:
                t.join(30)
            for p in children.values():
                p.terminate()
            for p in children.values():
                p.wait(60)
            app.close()
        return self.report()

    def _sample(self, pids: dict[str, int], sender: threading.Thread, drain_s: float) -> None:
        """Sample RSS at each window's end and print the window; after the sender ends,
        wait for the backlog (at most `drain_s`, or until 30 s pass with nothing new)."""
        sender_done_at: float | None = None
        last_progress, last_finished = time.monotonic(), 0
        index = 0
        while True:
            due = self.started + (index + 1) * self.window_s
            time.sleep(max(0.0, min(1.0, due - time.time())))
            if self.finished != last_finished:
                last_progress, last_finished = time.monotonic(), self.finished
            if time.time() >= due:
                self.windows[index].rss_mb = {name: rss_mb(pid) for name, pid in pids.items()}
                if self._watcher is not None:
                    self.windows[index].watch_late_s = self._watcher.watch.last_lateness
                print(f"  {json.dumps(self.row(index))}", flush=True)
                index += 1
            if sender_done_at is None and not sender.is_alive():
                sender_done_at = time.monotonic()
            if sender_done_at is not None and (
                self.finished >= self.expected
                or time.monotonic() - sender_done_at > drain_s
                or time.monotonic() - last_progress > 30
            ):
                return

    def row(self, index: int) -> dict[str, Any]:
        w = self.windows[index]
        waits = w.waits_ms or [float("nan")]
        return {
            "window_s": f"{index * self.window_s:g}-{(index + 1) * self.window_s:g}",
            "offered": w.offered,
            "finished": w.finished,
            "finished_per_s": round(w.finished / self.window_s, 1),
            "wait_p50_ms": round(percentile(waits, 0.5), 1),
            "wait_p99_ms": round(percentile(waits, 0.99), 1),
            "wait_max_ms": round(max(waits), 1),
            **{f"{name}_rss_mb": round(v, 1) for name, v in w.rss_mb.items()},
            **({} if self._watcher is None else {"watch_late_s": _rounded(w.watch_late_s)}),
        }

    def report(self) -> list[dict[str, Any]]:
        return [self.row(i) for i in sorted(self.windows)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"# Soak on {meta['broker']}: {meta['rate']} tasks/s offered for "
             f"{meta['seconds']:g} s", "",
             f"{meta['offered']} offered; {meta['finished']} final outcomes of "
             f"{meta['expected']} expected (a chain has two). "
             "Mix: 90% add, 4% failing, 4% retried once, 2% chains of two. One worker "
             "(concurrency 4) and one materializer; `wait` = a run's start minus its enqueue.",
             ""]  # fmt: skip
    if meta.get("watch"):
        lines += ["What `taskstream dev`'s watch of its broker said (as dev runs it: a produce -> "
                  "consume round trip and the tasks' wait, every 5 s):", ""]  # fmt: skip
        lines += [f"- {w}" for w in meta["warnings"]] or ["- nothing"]
        lines += [""]
    if rows:
        keys = list(rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--broker", choices=["tansu", "kafka"], default="kafka")
    p.add_argument("--rate", type=int, default=1000, help="tasks offered per second (1000)")
    p.add_argument("--minutes", type=float, default=10.0, help="offered time (10)")
    p.add_argument("--window", type=float, default=30.0, help="report window, s (30)")
    p.add_argument("--drain", type=float, default=120.0, help="backlog wait at the end, s")
    p.add_argument("--out", help="report name under benchmarks/reports/ (default: none)")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="taskstream-soak-"))
    broker: EmbeddedBroker | KafkaCluster = (
        EmbeddedBroker(log_path=workdir / "broker.log") if args.broker == "tansu"
        else KafkaCluster()  # one node, in a temporary directory of its own
    )  # fmt: skip
    try:
        broker.start()
        broker_pid = broker.pid if isinstance(broker, EmbeddedBroker) else _node_pid(broker)
        soak = Soak(broker.bootstrap_servers, workdir, args.rate, args.window)
        watch = args.broker == "tansu"  # dev watches its embedded broker
        rows = soak.run(args.minutes * 60, args.drain, {"broker": broker_pid}, watch)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {"broker": args.broker, "rate": args.rate, "seconds": args.minutes * 60,
            "offered": soak.offered, "finished": soak.finished,
            "expected": soak.expected, "watch": watch,
            "warnings": soak.warnings}  # fmt: skip
    print(markdown(meta, rows))
    if args.out:
        REPORTS.mkdir(exist_ok=True)
        (REPORTS / f"{args.out}.json").write_text(json.dumps({**meta, "windows": rows}, indent=1))
        (REPORTS / f"{args.out}.md").write_text(markdown(meta, rows))
    return 0


def _node_pid(cluster: KafkaCluster) -> int:
    process = cluster.nodes[1].process
    assert process is not None
    return process.pid


if __name__ == "__main__":
    sys.exit(main())
