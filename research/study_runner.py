"""One Optuna study run by any number of workers, on one machine or many, to an exact total.

- **Storage:** an embedded journal file (`optuna/<study>.log`, Optuna's JournalStorage: a
  crash or Ctrl-C loses at most the trials under way) or any Optuna RDB URL
  (`postgresql://…` for workers on several machines, `sqlite:///…`).
- **Exact total:** a trial counts only if fewer than `n_trials` live trials (complete,
  running or waiting) were created before it — checked when it is asked and again before
  it is told — so workers that ask at the same moment never overshoot; a surplus trial is
  told FAIL (user attr `surplus`), never COMPLETE.
- **Heartbeat:** a running trial's worker writes `heartbeat` (wall-clock seconds) every
  `heartbeat_s`; any worker that sees a running trial silent for `grace_s` fails it and
  enqueues its parameters again (user attr `retry_of`), so a SIGKILLed worker's trial is
  retried once and never counted twice.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock   # lock_obj's type; not re-exported
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_S = 5.0
GRACE_S = 30.0
POLL_S = 0.2
LIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)

optuna.logging.set_verbosity(optuna.logging.WARNING)


_STORAGES: dict[tuple[str, int], BaseStorage] = {}


def storage_for(url: str | None, study: str, root: Path) -> tuple[BaseStorage, str]:
    """(storage, the name to show it by: for optuna-dashboard and other workers); one storage
    object per location and process (no new connection or lock file per call)."""
    if url is None or url.startswith("journal:"):
        where = url[len("journal:"):] if url else str(root / "optuna" / f"{study}.log")
        key = (where, os.getpid())
        if key not in _STORAGES:
            _STORAGES[key] = _open_journal(Path(where))
        return _STORAGES[key], where
    key = (url, os.getpid())
    if key not in _STORAGES:
        _STORAGES[key] = _open_database(url)
    return _STORAGES[key], shown_url(url)


def shown_url(url: str) -> str:
    """A database URL as printed and reported: its password masked."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _open_journal(path: Path) -> BaseStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(UnsyncedJournal(str(path), lock_obj=FlockLock(str(path) + ".lock")))


def _open_database(url: str) -> BaseStorage:
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    # Workers started together on an empty database all create Optuna's schema at once; the
    # losers of that race see a duplicate type or table: they wait a moment and open again.
    for attempt in range(8):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 7:
                raise
            time.sleep(0.2 + random.random() * 0.5)
    raise AssertionError("unreachable")


class FlockLock(BaseJournalFileLock):
    """The journal's lock: an fcntl.flock on a lock file.  A waiter blocks in the kernel and
    wakes the moment the holder releases (Optuna's own file locks poll with a doubling
    sleep, which made two workers take turns slowly), and a killed holder's lock goes with
    its process (no stale lock file to wait out)."""

    def __init__(self, path: str) -> None:
        self._path, self._fd, self._pid = path, -1, -1
        self._threads = threading.Lock()

    def acquire(self) -> bool:
        if self._pid != os.getpid():            # first use, or after a fork: a lock of this process's own
            self._threads, self._fd, self._pid = threading.Lock(), -1, os.getpid()
        self._threads.acquire()
        try:
            if self._fd < 0:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return True

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


class UnsyncedJournal(JournalFileBackend):
    """Optuna's journal file without an fsync per record (some 18 per trial, the largest
    storage cost).  Each record is written whole under the lock before the call returns, so
    a killed worker loses nothing; a power cut may lose the last seconds of trials, which a
    resumed study runs again."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        self._lock.acquire()
        try:
            with open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))
        finally:
            self._lock.release()


@dataclass
class Evaluation:
    values: list[float]
    constraints: list[float]          # ≤ 0: satisfied (Optuna's convention)
    attrs: dict[str, Any]


def constraints_of(trial: FrozenTrial) -> Sequence[float]:
    """The trial's constraints (≤ 0 satisfied); a trial without any counts as infeasible."""
    return list(trial.constraints.values()) or [1.0]


class Worker:
    """Runs trials of one study until it holds `n_trials` complete ones."""

    def __init__(self, study: optuna.Study, n_trials: int, evaluate: Callable[[dict[str, Any]], Evaluation],
                 distributions: dict[str, optuna.distributions.BaseDistribution], *,
                 heartbeat_s: float = HEARTBEAT_S, grace_s: float = GRACE_S,
                 on_trial: Callable[[], None] | None = None) -> None:
        self.study, self.n_trials, self.evaluate = study, n_trials, evaluate
        self.distributions = distributions
        self.heartbeat_s, self.grace_s = heartbeat_s, grace_s
        self.on_trial = on_trial
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.ran = 0

    def run(self) -> int:
        """Trials until the study is done; returns how many this worker completed."""
        while True:
            trials = self.study.get_trials(deepcopy=False)
            self.fail_stale(trials)
            complete = sum(t.state == TrialState.COMPLETE for t in trials)
            if complete >= self.n_trials:
                return self.ran
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            live = sum(t.state in LIVE for t in trials)
            if live >= self.n_trials and not waiting:
                time.sleep(POLL_S)      # the last trials are under way elsewhere (or will be retried)
                continue
            self.one_trial()

    def one_trial(self) -> None:
        trial = self.study.ask(fixed_distributions=self.distributions)
        storage, tid = self.study._storage, trial._trial_id
        storage.set_trial_user_attr(tid, "worker", self.me)     # its start time is the first heartbeat
        if self._surplus(tid):
            self._drop(trial)
            return
        beat = _Heartbeat(storage, tid, self.heartbeat_s)
        try:
            ev = self.evaluate(dict(trial.params))
        except Exception as e:      # noqa: BLE001 - a trial that cannot run fails alone, not the worker
            beat.stop()
            self._fail(trial, f"{type(e).__name__}: {e}"[:300])
            return
        beat.stop()
        if self._surplus(tid):
            self._drop(trial)
            return
        try:
            if storage.get_trial(tid).state != TrialState.RUNNING:
                return          # failed as stale meanwhile (a stalled worker): its retry counts instead
            for k, v in ev.attrs.items():
                storage.set_trial_user_attr(tid, k, v)
            # Optuna's samplers read constraints from this system attribute (one write for all).
            storage.set_trial_system_attr(tid, "constraints", ev.constraints)
            self.study.tell(trial, ev.values, state=TrialState.COMPLETE)
        except optuna.exceptions.UpdateFinishedTrialError:
            return              # failed as stale between the check and the writes: the same
        self.ran += 1
        if self.on_trial:
            self.on_trial()

    def _surplus(self, trial_id: int) -> bool:
        before = sum(t.state in LIVE and t._trial_id < trial_id for t in self.study.get_trials(deepcopy=False))
        return before >= self.n_trials

    def _fail(self, trial: optuna.Trial, why: str) -> None:
        logging.getLogger("optimize").warning("trial %d failed: %s", trial.number, why)
        try:
            self.study._storage.set_trial_user_attr(trial._trial_id, "error", why)
            self.study.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def _drop(self, trial: optuna.Trial) -> None:
        self.study._storage.set_trial_user_attr(trial._trial_id, "surplus", True)
        try:
            self.study.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def fail_stale(self, trials: list[FrozenTrial]) -> None:
        """Fail running trials whose worker went silent, and enqueue each once again."""
        now = time.time()
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            beat = t.user_attrs.get("heartbeat")
            if beat is None:
                started = t.datetime_start.timestamp() if t.datetime_start else now
                beat = started
            if now - float(beat) < self.grace_s:
                continue
            try:
                if not self.study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue        # another worker failed it first
            logging.getLogger("optimize").warning("trial %d of %s went silent: failed, parameters queued again",
                                                  t.number, t.user_attrs.get("worker", "?"))
            # Run once again, and only once: a retry whose worker dies too is not retried (the
            # workers then draw a fresh trial instead, so the total is still met).
            if t.number not in retried and not t.user_attrs.get("surplus") and "retry_of" not in t.user_attrs:
                self.study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number},
                                         skip_if_exists=False)


class _Heartbeat:
    """Writes the trial's heartbeat every `every` seconds while it runs (a daemon thread)."""

    def __init__(self, storage: BaseStorage, trial_id: int, every: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, every), daemon=True)
        self._thread.start()

    def _beat(self, storage: BaseStorage, trial_id: int, every: float) -> None:
        while not self._stop.wait(every):
            try:
                storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
            except Exception:       # noqa: BLE001 - a missed beat is retried; the trial goes on
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def complete_count(study: optuna.Study) -> int:
    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
