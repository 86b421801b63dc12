"""Celery 5.7's remote-control client, for interop/pidbox_transport_test.go.

usage: pidbox_client.py ping BROKER_URL NODE [TIMEOUT]

Runs app.control.ping(destination=[NODE], timeout=TIMEOUT), which is
app.control.broadcast("ping", reply=True, ...) through kombu's Mailbox:
it declares and binds the reply queue <oid>.reply.celery.pidbox, publishes
the request to the fanout exchange celery.pidbox and collects the replies
whose "ticket" header matches. Prints the replies as JSON.
"""

import json
import sys

from celery import Celery


def main():
    mode, url, node = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    app = Celery("pidbox_client", broker=url)
    if mode != "ping":
        sys.exit(f"unknown mode {mode!r}")
    replies = app.control.ping(destination=[node], timeout=timeout)
    print(json.dumps(replies), flush=True)


if __name__ == "__main__":
    main()
