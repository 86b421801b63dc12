"""Three `gocelery beat` replicas on one store, the leader killed with
kill -9 mid-run: every due tick of a half-second entry is sent exactly once,
and a standby takes over within the lock TTL.

Ticks are counted where they land: each run is pyinterop.counter (INCR of
one key) executed by a real Python worker, so a tick sent twice counts
twice and a lost one is missing. What should have fired is read from the
beats' own "task sent" lines (entry, due time, task id derived from both,
fencing token): the due times must follow one another INTERVAL apart
except across the takeover, where the missed ticks are collapsed into one
run (Celery's rule after downtime), and the counter must equal the number
of sends. Runs only on the RabbitMQ pass: it takes about 35 s.
"""
import json
import signal
import time
from datetime import datetime

from conftest import new_uid, wait_until
from test_beat import beat_cli, beat_list, beat_store, go_beat, gocelery_bin, sends  # noqa: F401

TTL = 3.0          # --lock-ttl, seconds
TICKS = 62         # due ticks to cover (the issue asks for at least 60)
INTERVAL = 0.5     # the entry's trigger, seconds


def log_time(line_time):
    return datetime.fromisoformat(line_time.replace("Z", "+00:00")).timestamp()


def leader_of(beats):
    """The replica whose log says it leads, last one to say so."""
    best, best_t = None, None
    for b in beats:
        for line in b.log().splitlines():
            if 'msg="beat: leader"' in line:
                t = log_time(line.split(" ", 1)[0][len("time="):])
                if best_t is None or t > best_t:
                    best, best_t = b, t
    return best, best_t


def test_replicas_kill_leader_every_tick_once(gocelery_bin, go_beat, py_worker, beat_store, rdb):  # noqa: F811
    client, prefix = beat_store
    w = py_worker(concurrency=2)
    key = f"beat-replicas-{new_uid()}"
    beat_cli(gocelery_bin, prefix, "add", "tick", "--task", "pyinterop.counter",
             "--kwargs", json.dumps({"key": key}), "--queue", w.queue, "--trigger", f"every {int(INTERVAL * 1000)}ms")
    beats = [go_beat(prefix, "--lock-ttl", f"{TTL}s", label=f"beat replica {i}") for i in range(3)]

    wait_until(lambda: len(sends(*beats)) >= 20, 40, interval=0.1, message="20 ticks sent")
    leader, _ = leader_of(beats)
    assert leader is not None
    # Kill -9 between two ticks: right after one was sent, so the kill
    # lands while the leader sleeps, as a crash usually does.
    n = len(sends(leader))
    wait_until(lambda: len(sends(leader)) > n, 5, interval=0.01, message="a send by the leader")
    time.sleep(INTERVAL / 2)
    leader.signal(signal.SIGKILL)
    killed_at = time.time()
    leader.proc.wait(timeout=10)
    survivors = [b for b in beats if b is not leader]

    wait_until(lambda: leader_of(survivors)[0] is not None, TTL + 5, interval=0.05,
               message="a new leader")
    new_leader, took_at = leader_of(survivors)
    takeover = took_at - killed_at
    wait_until(lambda: len(sends(*beats)) >= TICKS, TICKS * INTERVAL + 20, interval=0.2,
               message=f"{TICKS} ticks sent")
    for b in survivors:
        b.stop(timeout=10)

    all_sends = sorted(sends(*beats), key=lambda s: s["due_ms"])
    dues = [s["due_ms"] for s in all_sends]
    ids = [s["task_id"] for s in all_sends]
    assert len(set(dues)) == len(dues), "a due tick was sent twice"
    assert len(set(ids)) == len(ids), "a task id was sent twice"
    assert not any(s["resend"] for s in all_sends)
    fences = sorted({s["fence"] for s in all_sends})
    assert len(fences) == 2 and fences[0] < fences[1], f"fencing tokens {fences}"
    # Exactly once at the workers: the counter is the number of sends.
    wait_until(lambda: int(rdb.get(key) or 0) >= len(all_sends), 20,
               message=f"counter reaching {len(all_sends)}")
    time.sleep(1.0)  # a duplicate would arrive now
    count = int(rdb.get(key))
    assert count == len(all_sends), f"{count} runs for {len(all_sends)} due ticks"
    # Every tick was due INTERVAL after the previous run, except across the
    # takeover: the leader's last sent run, then the new leader's first.
    # A regular gap is INTERVAL plus that run's send delay; the takeover gap
    # is the time from the old leader's last run to the new leader's first,
    # well over 3 intervals here (the lock outlives the kill by up to the
    # TTL, 3 s).
    gaps = [(b - a) / 1000 for a, b in zip(dues, dues[1:])]
    long_gaps = [g for g in gaps if g >= 3 * INTERVAL]
    assert len(long_gaps) == 1 and long_gaps[0] <= TTL + 1.5, f"gaps {gaps}"
    assert takeover <= TTL + 0.5, f"takeover took {takeover:.2f}s with a {TTL}s lock TTL"
    assert beat_list(gocelery_bin, prefix)["tick"]["total_run_count"] == len(all_sends)
    delays = sorted(s["delay_ms"] for s in all_sends)
    print(f"\nreplicas: {len(all_sends)} ticks sent once each, counter {count}, "
          f"takeover {takeover:.2f}s (TTL {TTL}s), takeover gap {long_gaps[0]:.2f}s, "
          f"send delay p50 {delays[len(delays) // 2]} ms max {delays[-1]} ms, "
          f"new leader {new_leader.label}")
