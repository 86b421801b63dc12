"""Helpers shared by the live interop tests (imported by the test modules)."""
import json
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

READY_STATES = ("SUCCESS", "FAILURE", "REVOKED")

ADD_CASES = [
    # (x, y, expected)
    (2, 3, 5),
    (-7, 3, -4),
    (1.5, 2.25, 3.75),
    (2.0, 3.0, 5.0),          # float result stays float even when integral
    (1, 0.5, 1.5),
    (2**70, 1, 2**70 + 1),    # big int
    (2**63 - 1, 1, 2**63),    # int64 overflow -> big int
    (-(2**63), -1, -(2**63) - 1),
    (10**30, -(10**30), 0),   # big ints cancelling to a small int
]


def echo_payload():
    aware = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=2)))
    utc = datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)
    args = [
        aware,
        date(1999, 12, 31),
        Decimal("12345678901234567890.123456789012345678901"),
        Decimal("-0.000001"),
        UUID("12345678-1234-5678-1234-567812345678"),
        b"plain utf-8 bytes",
        b"\x00\xff\xfe binary",
        "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001F389",
        2**70,
        -(2**70),
        0.1,
        1e300,
        5.0,
        True,
        None,
        [],
        {"nested": [1, [2, [3, {"deep": "\u00fc"}]]], "empty": {}},
    ]
    kwargs = {
        "when": utc,
        "d\u00e9cimal": Decimal("0.1"),
        "ids": [uuid4(), uuid4()],
        "nested": {"list": [1, 2.5, None, False, "x", [b"in", 2**65]],
                   "map": {"a": {"b": {"c": utc}}}},
        "\u043a\u043b\u044e\u0447": "\u0437\u043d\u0430\u0447\u0435\u043d\u0438\u0435",
    }
    return args, kwargs


def typed(value):
    """A structure that compares equal only if the types match too (so 1 vs
    1.0 vs True, str vs bytes, tuple vs list, and datetime offsets differ)."""
    if isinstance(value, bool) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, datetime):
        return ("datetime", value.isoformat())
    if isinstance(value, date):
        return ("date", value.isoformat())
    if isinstance(value, (int, float, str, bytes, Decimal, UUID)):
        return (type(value).__name__, value)
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, tuple):
        return ("tuple", [typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted(((typed(k), typed(v)) for k, v in value.items()), key=repr))
    return (type(value).__name__, repr(value))


def poll_states(result, timeout=15.0, interval=0.01):
    """Reads result.state (and .info) until a ready state; returns the list
    of distinct consecutive (state, info) observations."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        state = result.state
        info = result.info
        # .state and .info are two reads: keep the pair only if the state
        # did not change in between (else info may belong to the next state).
        consistent = result.state == state
        obs = (state, info if not isinstance(info, BaseException) else repr(info))
        if consistent and (not seen or seen[-1] != obs):
            seen.append(obs)
        if state in READY_STATES:
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"task {result.id} not ready after {timeout}s; states seen: {seen}",
                        pytrace=False)
        time.sleep(interval)


class StateTap:
    """Records every state the backend PUBLISHes for task ids (Redis result
    backends PUBLISH each stored meta on the channel celery-task-meta-<id>).
    Start it before sending so no state is missed."""

    def __init__(self, rdb):
        self.pubsub = rdb.pubsub()
        self.pubsub.psubscribe("celery-task-meta-*")
        # Wait for the subscription to be active.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=0.5)
            if msg and msg["type"] == "psubscribe":
                break
        else:
            raise RuntimeError("Redis psubscribe not confirmed")
        self.metas = {}

    def _drain(self, timeout):
        msg = self.pubsub.get_message(timeout=timeout)
        if msg and msg["type"] == "pmessage":
            meta = json.loads(msg["data"])
            self.metas.setdefault(meta.get("task_id"), []).append(meta)

    def states(self, task_id, timeout=15.0):
        """All metas published for task_id up to its ready state."""
        deadline = time.monotonic() + timeout
        while True:
            metas = self.metas.get(task_id, [])
            if metas and metas[-1]["status"] in READY_STATES:
                return metas
            if time.monotonic() > deadline:
                pytest.fail(f"no ready state published for {task_id} within {timeout}s; "
                            f"got {[m['status'] for m in metas]}", pytrace=False)
            self._drain(0.2)

    def close(self):
        try:
            self.pubsub.close()
        except Exception:  # noqa: BLE001
            pass


def flask_result(client, result_id, timeout=15.0):
    """Polls the Flask GET /result/<id> route until the task is ready."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/result/{result_id}")
        assert resp.status_code == 200, resp.data
        body = resp.get_json()
        if body["ready"]:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"/result/{result_id} not ready after {timeout}s: {body}", pytrace=False)
        time.sleep(0.02)


class CounterLoad:
    """Counter tasks under a fault: one task per key, sent from a thread by
    send_one(key) (each retried for up to 15 s, a failed try counted as a
    send error), and the runs per key read back from Redis, where each run
    INCRs its key. sent / lost / ran twice are counted from these."""

    def __init__(self, rdb, keys, send_one, pause=0.0):
        import threading
        self.rdb, self.keys, self.send_one, self.pause = rdb, keys, send_one, pause
        self.confirmed, self.send_errors = [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self):
        for k in self.keys:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not self.stop.is_set():
                try:
                    self.send_one(k)
                    self.confirmed.append(k)
                    break
                except Exception:  # refused or cut by the fault: send again
                    self.send_errors += 1
                    time.sleep(0.1)
            if self.pause:
                time.sleep(self.pause)

    def start(self):
        self.thread.start()
        return self

    def counts(self):
        pipe = self.rdb.pipeline()
        for k in self.keys:
            pipe.get(k)
        return [int(v or 0) for v in pipe.execute()]

    def ran(self):
        return sum(1 for v in self.counts() if v)

    def wait_ran(self, n, timeout, what):
        deadline = time.monotonic() + timeout
        while self.ran() < n:
            assert time.monotonic() < deadline, f"no progress: {what}"
            time.sleep(0.1)

    def resumed_after(self, at, before, budget, margin=0):
        """Seconds from at until more than before + margin keys ran, or
        None within budget seconds."""
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if self.ran() > before + margin:
                return time.monotonic() - at
            time.sleep(0.1)
        return None

    def finish(self, join, settle):
        """Stops sending after join seconds, waits up to settle seconds for
        every confirmed key to run, and returns sent, lost, twice and
        send_errors."""
        self.thread.join(join)
        self.stop.set()
        sent = set(self.confirmed)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            counts = self.counts()
            if all(counts[i] for i, k in enumerate(self.keys) if k in sent):
                break
            time.sleep(0.2)
        counts = self.counts()
        return {"sent": len(sent),
                "lost": sum(1 for i, k in enumerate(self.keys) if k in sent and not counts[i]),
                "twice": sum(1 for v in counts if v > 1), "send_errors": self.send_errors}
