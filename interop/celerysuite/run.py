"""Run Celery's own integration suite (t/integration, unchanged) against the
Go worker and against Celery's Python worker, on RabbitMQ and on Redis, and
compare: per file and broker, passed / failed / skipped for each worker, the
share of Python's passes that Go passes too, and the Go-only failures with a
line of cause each (written to <out>/go-only-failures.txt).

    .venv/bin/python interop/celerysuite/run.py [--brokers rabbitmq,redis]
        [--workers go,python] [--files test_canvas.py,test_tasks.py] [-k EXPR]

The suite uses the queue "celery": on RabbitMQ it gets a vhost of its own
(celerysuite), on Redis database 14 as broker; results and the suite's
Redis helpers use database 15 (both flushed before each run, nothing else).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_PY = os.path.join(ROOT, '.venv', 'bin', 'python')
REDIS = ('127.0.0.1', 6379)
BROKER_DB = int(os.environ.get('CELERYSUITE_BROKER_DB', '14'))
BACKEND_DB = int(os.environ.get('CELERYSUITE_BACKEND_DB', '15'))
VHOST = os.environ.get('CELERYSUITE_VHOST', 'celerysuite')
BROKERS = {
    'rabbitmq': f'amqp://guest:guest@127.0.0.1:5672/{VHOST}',
    'redis': f'redis://{REDIS[0]}:{REDIS[1]}/{BROKER_DB}',
}
BACKEND = f'redis://{REDIS[0]}:{REDIS[1]}/{BACKEND_DB}'
LOCK = '/tmp/rabbitmq.lock'

# What was found behind a Go-only failure, where it was looked into; the
# failure's own message follows it in go-only-failures.txt.
PUBSUB = ('PUBSUB CHANNELS is server-wide: it counts the subscriptions of whatever else runs on the '
          'same Redis (another suite run, other tests), not only this test\'s')
CAUSES = {
    'test_tasks::test_revoke_keeps_state_of_task_started_elsewhere':
        "Go's revoke stores REVOKED over a state another worker set (STARTED, PROGRESS); "
        'Celery 5.7 stores it only over PENDING, RECEIVED, RETRY, REJECTED (consumer/control.go Revoke)',
    'test_tasks::test_revoked_by_headers_simple_canvas':
        'revoke_by_stamped_headers is not implemented by the Go worker',
    'test_tasks::test_revoke_by_stamped_headers_no_match':
        'revoke_by_stamped_headers is not implemented by the Go worker (no "ok" in its reply)',
    'test_tasks::test_expired':
        'on RabbitMQ the second task (expires=now+1 s) never reached the Go worker (its per-message TTL ran out in the '
        'queue behind 4 sleeping tasks), so no REVOKED was stored; Celery\'s worker had it prefetched',
    'test_task_redis_result_backend::test_asyncresult_get_cancels_subscription': PUBSUB,
    'test_task_redis_result_backend::test_asyncresult_forget_cancels_subscription': PUBSUB,
    'test_task_redis_result_backend::test_ignoring_result_no_subscriptions': PUBSUB,
    'test_xmap_xstarmap::test_starmap_in_a_group_and_a_chain': 'celery.starmap was not registered (added since)',
    'test_xmap_xstarmap::test_starmap_keeps_frozen_id_and_link': 'celery.starmap was not registered (added since)',
    'test_chord::test_chord_error_propagation_with_different_body_types':
        "a chord header's failure does not reach a group body's members as Celery's chord_error_from_stack does",
    'test_chord::test_errbacks_of_chord_in_group_body_run_on_header_failure':
        "a chord header's failure does not run the errbacks of a chord inside the group body",
    'test_chord::test_chord_on_error':
        "the chord body's FAILURE is stored without its errback as child, so res.children stays empty",
    'test_chain::test_header_failure_fails_the_chords_after_a_group_body':
        'a failed chord whose body is a group does not fail the chain that follows the body '
        '(producer.Workflow.chordError fails the group members, not the body\'s chain)',
}


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def redis_flush(db):
    sh('redis-cli', '-h', REDIS[0], '-p', str(REDIS[1]), '-n', str(db), 'flushdb', stdout=subprocess.DEVNULL)


def reset_vhost():
    # A vhost of the suite's own: its "celery" queue and the manager's
    # purge touch nobody else's messages.
    subprocess.run(['flock', '-s', LOCK, 'rabbitmqctl', '-q', 'delete_vhost', VHOST],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sh('flock', '-s', LOCK, 'rabbitmqctl', '-q', 'add_vhost', VHOST, stdout=subprocess.DEVNULL)
    sh('flock', '-s', LOCK, 'rabbitmqctl', '-q', 'set_permissions', '-p', VHOST, 'guest', '.*', '.*', '.*',
       stdout=subprocess.DEVNULL)


def build_go(out):
    binary = os.path.join(out, 'goworker')
    sh('go', 'build', '-o', binary, './interop/celerysuite/goworker', cwd=ROOT)
    return binary


def run_one(out, broker, worker, test_file, goworker, kexpr, timeout):
    name = f'{worker}-{broker}-{test_file[:-3]}'
    xml = os.path.join(out, name + '.xml')
    log = os.path.join(out, name + '.log')
    redis_flush(BACKEND_DB)
    if broker == 'redis':
        redis_flush(BROKER_DB)
    else:
        reset_vhost()
    env = dict(os.environ)
    env.update({
        'TEST_BROKER': BROKERS[broker], 'TEST_BACKEND': BACKEND,
        'REDIS_HOST': REDIS[0], 'REDIS_PORT': str(REDIS[1]),
        'CELERYSUITE_REDIS_DB': str(BACKEND_DB), 'CELERYSUITE_WORKER': worker,
        'PYTHONPATH': HERE,
    })
    if worker == 'go':
        env['CELERYSUITE_GOWORKER'] = goworker
        env['CELERYSUITE_GO_LOG'] = os.path.join(out, name + '.goworker.log')
        if os.path.exists(env['CELERYSUITE_GO_LOG']):
            os.remove(env['CELERYSUITE_GO_LOG'])
    cmd = [VENV_PY, '-m', 'pytest', '-v', '-rN', '--junitxml', xml, f'--timeout={timeout}',
           os.path.join('t', 'integration', test_file)]
    if kexpr:
        cmd += ['-k', kexpr]
    if broker == 'rabbitmq':
        cmd = ['flock', '-s', LOCK] + cmd
    start = time.monotonic()
    with open(log, 'w') as f:
        subprocess.run(cmd, cwd=HERE, env=env, stdout=f, stderr=subprocess.STDOUT)
    return xml, time.monotonic() - start


def outcomes(xml):
    """test id -> (outcome, one line of cause) from a junit file."""
    res = {}
    if not os.path.exists(xml):
        return res
    for tc in ET.parse(xml).getroot().iter('testcase'):
        tid = f"{tc.get('classname', '').split('.')[-1]}::{tc.get('name')}"
        outcome, cause = 'passed', ''
        for child in tc:
            if child.tag in ('failure', 'error'):
                outcome = 'failed'
                cause = (child.get('message') or child.text or '').strip()
                break
            if child.tag == 'skipped':
                outcome = 'skipped'
                cause = (child.get('message') or '').strip()
                break
        if tid in res and res[tid][0] == 'failed' and outcome != 'failed':
            continue  # a teardown error after the call counts as a failure
        res[tid] = (outcome, ' '.join(cause.split())[:220])
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--brokers', default='rabbitmq,redis')
    ap.add_argument('--workers', default='go,python')
    ap.add_argument('--files', default='test_canvas.py,test_tasks.py')
    ap.add_argument('-k', dest='kexpr', default='')
    ap.add_argument('--timeout', type=int, default=90, help='seconds per test (pytest-timeout)')
    ap.add_argument('--out', default='/tmp/celerysuite')
    ap.add_argument('--strict', action='store_true',
                    help='exit 1 when a Go test fails (for a subset that must pass, as in make test)')
    ap.add_argument('--goworker', default='', help='a built Go worker binary (default: build this tree\'s)')
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    workers = a.workers.split(',')
    goworker = a.goworker or (build_go(a.out) if 'go' in workers else None)
    table, fails, times = [], [], {}
    for broker in a.brokers.split(','):
        for test_file in a.files.split(','):
            got = {}
            for worker in workers:
                xml, secs = run_one(a.out, broker, worker, test_file, goworker, a.kexpr, a.timeout)
                times[(worker, broker, test_file)] = secs
                got[worker] = outcomes(xml)
            row = {'file': test_file, 'broker': broker}
            for worker in workers:
                counts = {'passed': 0, 'failed': 0, 'skipped': 0}
                for outcome, _ in got[worker].values():
                    counts[outcome] += 1
                row[worker] = counts
            if 'go' in got and 'python' in got:
                # The tests the Go run skips as Python-only (they read the
                # Python worker's own process) are out of the comparison.
                py_only = {t for t, (o, c) in got['go'].items() if o == 'skipped' and c.startswith('Python-only')}
                py_pass = {t for t, (o, _) in got['python'].items() if o == 'passed' and t not in py_only}
                both = {t for t in py_pass if got['go'].get(t, ('missing',))[0] == 'passed'}
                row['python_only_skipped'] = len(py_only)
                row['go_of_python'] = (len(both), len(py_pass))
                for t in sorted(py_pass - both):
                    o, cause = got['go'].get(t, ('missing', 'not run'))
                    known = CAUSES.get(t.split('[')[0])
                    if known:
                        cause = f'{known}. Test says: {cause}'
                    fails.append(f'{broker} {test_file}::{t} [{o}] {cause}')
            table.append(row)
    print()
    hdr = f"{'file':<16} {'broker':<9}" + ''.join(f" {w + ' pass/fail/skip':>22}" for w in workers)
    if len(workers) == 2:
        hdr += '  go passes of python passes'
    print(hdr)
    tot = {}
    for row in table:
        line = f"{row['file']:<16} {row['broker']:<9}"
        for w in workers:
            c = row[w]
            line += f" {c['passed']:>10}/{c['failed']}/{c['skipped']:<8}"
        if 'go_of_python' in row:
            n, d = row['go_of_python']
            line += f"  {n}/{d} = {100 * n / max(d, 1):.1f}%"
            t = tot.setdefault(row['broker'], [0, 0])
            t[0] += n
            t[1] += d
        print(line)
    for broker, (n, d) in tot.items():
        print(f'{broker}: Go passes {n} of the {d} tests Python passes ({100 * n / max(d, 1):.1f}%), '
              'not counting the tests skipped for Go as Python-only')
    print('seconds per run: ' + ', '.join(f'{w}/{b}/{f[:-3]} {s:.0f}' for (w, b, f), s in times.items()))
    path = os.path.join(a.out, 'go-only-failures.txt')
    with open(path, 'w') as f:
        f.write('\n'.join(fails) + ('\n' if fails else ''))
    print(f'{len(fails)} Go-only failures written to {path}')
    with open(os.path.join(a.out, 'summary.json'), 'w') as f:
        json.dump({'table': table, 'seconds': {'/'.join(k): v for k, v in times.items()}}, f, indent=1)
    if a.strict and 'go' in workers:
        failed = sum(row['go']['failed'] for row in table)
        ran = sum(row['go']['passed'] + row['go']['failed'] for row in table)
        # The closing line CI reads, over the Go runs.
        print(f"celerysuite: {sum(row['go']['passed'] for row in table)} passed, {failed} failed")
        return 1 if failed or not ran else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
