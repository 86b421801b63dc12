# Generates topic.json: kombu 5.7 topic patterns and re.match results.
# Run: .venv/bin/python broker/redis/testdata/topic.py > broker/redis/testdata/topic.json
import json
from kombu.transport.virtual.exchange import TopicExchange
t = TopicExchange(None)
keys = ["a.*.#", "#", "*", "*.x", "foo-bar_baz.#", "ü.*", "a.b", "a..b", "", "x$y.*", "celery.#", "a\x00b", "€.#", "a+b.*"]
rks = ["a.b.c", "a.b", "a", "b.x", "x", "foo-bar_baz", "foo-bar_baz.q", "ü.z", "a..b", "", "x$y.z", "celery.task", "a\x00b", "€.x", "a+b.c", "a.b.c\n", "b.x\n", "a.bc.d"]
out = {"patterns": {k: t.key_to_pattern(k) for k in keys}, "matches": []}
for k in keys:
    p = t.key_to_pattern(k)
    for rk in rks:
        out["matches"].append([k, rk, bool(t._match(p, rk))])
print(json.dumps(out))
