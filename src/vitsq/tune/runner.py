"""The search driver of ``vitsq tune``, its results file, and the local and Ray executors.

**Results file** (``DIR/trials.jsonl``): one JSON object per finished trial, appended as each
finishes with a single ``write`` of the whole line on an ``O_APPEND`` descriptor and ``fsync``.
A process killed mid-write can leave at most a torn last line: reading ignores it (with a
warning) and cuts it off before the next append, so the file always holds whole records. A
resumed search re-plans deterministically (:class:`~vitsq.tune.space.Planner`) and reuses the
record of every candidate already in the file instead of running it again.

**Executors** run trials in separate processes, each with the trial's thread count:
:class:`LocalExecutor` starts ``python -m vitsq.tune.worker`` per attempt;
:class:`RayExecutor` submits Ray tasks (``num_cpus`` = the trial's threads, one task per worker
process, no Ray-level retries). A trial whose process dies is retried once, then recorded as
``failed``; the search goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from vitsq.errors import InputError, OutputError, UnsupportedError
from vitsq.tune.trial import SCHEMA, Reference, TrialSpec

log = logging.getLogger(__name__)

RESULTS_FILE = "trials.jsonl"
#: attempts per trial when its worker process dies (the first try and one retry)
ATTEMPTS = 2
RAY_EXTRA = "pip install 'vitsq[cluster]'"


# ============================================================================ results file
def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


class ResultsLog:
    """Append-only JSONL of trial records (module docstring); ``records`` are those read at open
    plus those appended since, the last record of a key winning."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.torn = 0
        self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.torn = len(data) - end
            log.warning("%s: ignoring a torn last line (%d bytes, a write that was interrupted)", self.path, self.torn)
            os.truncate(self.path, end)  # the next append starts on a line of its own
        for n, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{self.path} line {n} is not a trial record ({exc}): the file was edited by hand; "
                                 "fix or remove that line, or start over with --force") from None
            if not isinstance(rec, dict) or rec.get("schema") != SCHEMA or "key" not in rec:
                raise InputError(f"{self.path} line {n} is not a vitsq tune trial record (schema {SCHEMA})")
            self.records[rec["key"]] = rec

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one whole line, durably."""
        line = (json.dumps(_json_safe(record), allow_nan=False, default=str) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[record["key"]] = record


# ============================================================================ executors
@dataclass
class Job:
    """One attempt of one trial on an executor."""

    spec: TrialSpec
    attempt: int
    handle: Any = None
    started: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """A finished attempt: the trial's record, or why its process died."""

    record: dict[str, Any] | None = None
    died: str | None = None


class LocalExecutor:
    """Trials in local worker processes, at most ``workers`` at a time (module docstring).

    ``command`` replaces ``[python, -m, vitsq.tune.worker]`` (tests use it to kill workers)."""

    name = "local"

    def __init__(self, workers: int, logs: Path, command: Sequence[str] | None = None) -> None:
        if workers < 1:
            raise InputError(f"--workers must be >= 1, got {workers}")
        self.capacity = workers
        self.logs = Path(logs)
        self.command = list(command or [sys.executable, "-m", "vitsq.tune.worker"])
        self.max_threads = os.cpu_count() or 1
        self._tmp = tempfile.TemporaryDirectory(prefix="vitsq-tune-")
        self._reference: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "workers": self.capacity, "cores": self.max_threads}

    def prepare(self, reference: Reference) -> None:
        self._reference = Path(self._tmp.name) / "reference.pkl"
        self._reference.write_bytes(pickle.dumps(reference))

    def start(self, job: Job) -> None:
        tmp = Path(self._tmp.name)
        stem = f"trial-{job.spec.index:04d}-{job.attempt}"
        spec_path, out = tmp / f"{stem}.pkl", tmp / f"{stem}.json"
        spec_path.write_bytes(pickle.dumps(job.spec))
        out.unlink(missing_ok=True)
        threads = str(job.spec.candidate["threads"])
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        self.logs.mkdir(parents=True, exist_ok=True)
        logf = open(self.logs / f"{stem}.log", "wb")
        job.handle = subprocess.Popen(self.command + [str(spec_path), str(self._reference), str(out)], env=env,
                                      stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        job.extra.update(out=out, logf=logf, log=self.logs / f"{stem}.log")

    def poll(self, jobs: Sequence[Job], timeout: float) -> list[tuple[Job, Outcome]]:
        deadline = time.time() + timeout
        while True:
            done = [(j, self._outcome(j)) for j in jobs if j.handle.poll() is not None]
            if done or time.time() >= deadline:
                return done
            time.sleep(0.2)

    @staticmethod
    def _outcome(job: Job) -> Outcome:
        job.extra["logf"].close()
        rc, out = job.handle.returncode, job.extra["out"]
        if rc == 0 and out.is_file():
            try:
                return Outcome(record=json.loads(out.read_text(encoding="utf-8")))
            except ValueError:
                pass
        how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        tail = job.extra["log"].read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return Outcome(died=f"worker process {how}" + (f": {' | '.join(tail)}" if tail else ""))

    def close(self) -> None:
        """Stop the workers this executor started (interrupt or error) and remove its files."""
        self._tmp.cleanup()


def _stop_local(jobs: Sequence[Job]) -> None:
    for j in jobs:
        p = j.handle
        if isinstance(p, subprocess.Popen) and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if "logf" in j.extra:
            j.extra["logf"].close()


def import_ray():
    """``ray``, or an :class:`UnsupportedError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UnsupportedError(f"--ray needs Ray, an optional extra: {RAY_EXTRA} (or pip install 'ray[default]'); "
                               f"without --ray the trials run in local worker processes ({exc})") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a Ray address whose host:port does not accept a TCP connection (``ray.init`` would
    wait on it for minutes)."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"Ray address {address!r} is not HOST:PORT or ray://HOST:PORT (e.g. 10.0.0.5:6379 for a "
                         "cluster's head node, or --ray alone for a local Ray started for the run)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"the Ray cluster at {address} does not answer ({exc.strerror or exc}): start it with "
                         "`ray start --head` on the head node, or check the address and port") from None


def _ray_trial(spec: TrialSpec, reference: Reference) -> dict[str, Any]:
    """The Ray task: set the trial's threads (Ray's OMP_NUM_THREADS follows num_cpus) and run it."""
    from vitsq.tune.trial import run_trial

    return run_trial(spec, reference)


class RayExecutor:
    """Trials as Ray tasks on the cluster at ``address`` (``"auto"``: a local Ray started for the
    run and stopped after it)."""

    name = "ray"

    def __init__(self, address: str = "auto") -> None:
        ray = import_ray()
        self.ray, self.address = ray, address
        if address == "auto":
            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                     num_cpus=os.cpu_count() or 1)
            self.started = True
        else:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            self.started = False
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
        self.max_threads = max(cpus or [1])
        self.capacity = max(1, sum(cpus))
        self._remote = ray.remote(max_calls=1, max_retries=0)(_ray_trial)
        self._reference = None
        self._nodes = len(nodes)

    def describe(self) -> dict[str, Any]:
        return {"executor": "ray", "address": self.address, "nodes": self._nodes, "cpus": self.capacity,
                "ray": self.ray.__version__}

    def prepare(self, reference: Reference) -> None:
        self._reference = self.ray.put(reference)

    def start(self, job: Job) -> None:
        threads = int(job.spec.candidate["threads"])
        job.handle = self._remote.options(num_cpus=threads).remote(job.spec, self._reference)

    def poll(self, jobs: Sequence[Job], timeout: float) -> list[tuple[Job, Outcome]]:
        by_ref = {j.handle: j for j in jobs}
        ready, _ = self.ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((by_ref[ref], Outcome(record=self.ray.get(ref))))
            except self.ray.exceptions.RayError as exc:  # worker or node died, task cancelled
                out.append((by_ref[ref], Outcome(died=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")))
        return out

    def cancel(self, jobs: Sequence[Job]) -> None:
        """Cancel running tasks (the driver was interrupted): they would only waste the cluster."""
        for j in jobs:
            try:
                self.ray.cancel(j.handle, force=True)
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.warning("could not cancel trial %d: %s", j.spec.index, exc)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


# ============================================================================ running rounds
def _died_record(job: Job, why: str) -> dict[str, Any]:
    from vitsq.tune.space import Candidate

    cand = Candidate.from_dict(job.spec.candidate)
    return {"schema": SCHEMA, "index": job.spec.index, "key": cand.key, "candidate": cand.to_dict(),
            "status": "failed", "error": f"the worker died twice: {why}", "attempts": job.attempt}


def run_specs(executor: Any, specs: Sequence[TrialSpec], results: ResultsLog,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Run ``specs`` on ``executor`` (at most its capacity at once), retrying a dead worker once,
    appending each finished record to ``results`` as it comes."""
    pending = deque(Job(s, 1) for s in specs)
    running: list[Job] = []
    try:
        while pending or running:
            while pending and len(running) < executor.capacity:
                job = pending.popleft()
                executor.start(job)
                running.append(job)
            for job, outcome in executor.poll(running, timeout=1.0):
                running.remove(job)
                if outcome.record is None and job.attempt < ATTEMPTS:
                    log.warning("trial %d: %s; retrying once", job.spec.index, outcome.died)
                    pending.appendleft(Job(job.spec, job.attempt + 1))
                    continue
                record = outcome.record if outcome.record is not None else _died_record(job, outcome.died or "")
                record["attempts"] = job.attempt
                results.append(record)
                if on_record is not None:
                    on_record(record)
    finally:
        if running and hasattr(executor, "cancel"):
            executor.cancel(running)
        _stop_local(running)


# ============================================================================ output folder
class TuneDir:
    """The output folder: created if missing; an existing one must be a ``vitsq tune`` folder
    (it then resumes); a lock file keeps a second search out of it."""

    SETTINGS = "tune.json"
    LOCK = ".vitsq-tune.lock"

    def __init__(self, path: Path, force: bool = False) -> None:
        import fcntl

        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"-o {self.path} is a file: give a folder for the search's results")
        if self.path.is_dir() and any(self.path.iterdir()) and not (self.path / self.SETTINGS).is_file():
            raise OutputError(f"-o {self.path} is a folder `vitsq tune` did not write (no {self.SETTINGS}): "
                              "choose another folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.path / self.LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise OutputError(f"another vitsq tune is running in {self.path}: wait for it or choose another "
                              "folder") from None
        if force:  # only what a search writes; the winner's artifact only if it is one
            for name in (self.SETTINGS, RESULTS_FILE, "summary.json", "report.md", "pareto.png", "sensitivity.json",
                         "best/preset.json"):
                (self.path / name).unlink(missing_ok=True)
            from vitsq.outputs import is_vitsq_artifact

            if is_vitsq_artifact(self.path / "winner"):
                import shutil

                shutil.rmtree(self.path / "winner")

    def settings(self) -> dict[str, Any] | None:
        p = self.path / self.SETTINGS
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{p} is not readable JSON ({exc}): start over with --force") from None

    def write_json(self, name: str, data: Any) -> Path:
        from vitsq.outputs import write_text

        return write_text(self.path / name, json.dumps(_json_safe(data), indent=2, default=str), suffixes=(".json",),
                          force=True, what=name)

    def close(self) -> None:
        os.close(self._lock)
