"""A Flask app that sends its Celery tasks to the Go worker.

Built exactly as Celery's "Using Celery with Flask" guide recommends
(application factory, ``celery_init_app``, a ``FlaskTask`` whose ``__call__``
runs inside ``app.app_context()``, config from ``app.config["CELERY"]``,
``@shared_task`` for the tasks), so it stands for an unchanged user app.

The tasks' bodies live in Go (interop/tasks); the Python declarations below
are stubs that only give ``.delay()`` / ``.apply_async()`` a task to call.

``create_app(..., task_namespace="pyinterop")`` makes the routes send the
Python mirror's tasks (pyinterop.*) instead: service A of the two-services
test.
"""
from celery import Celery, Task, shared_task
from celery.result import AsyncResult
from flask import Flask, current_app, jsonify, request
from kombu import Queue


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def create_app(broker_url, backend_url, queue, task_namespace="interop",
               **extra_celery_conf) -> Flask:
    app = Flask(__name__)
    celery_conf = dict(
        broker_url=broker_url,
        result_backend=backend_url,
        task_default_queue=queue,
        task_queues=(Queue(queue),),
        result_extended=True,
        broker_connection_retry_on_startup=True,
    )
    celery_conf.update(extra_celery_conf)
    app.config.from_mapping(CELERY=celery_conf, TASK_NAMESPACE=task_namespace)
    celery_init_app(app)
    app.register_blueprint(_routes(app))
    return app


# --- task stubs: the Go worker runs these --------------------------------

def _go_only():
    raise NotImplementedError("runs on the Go worker")


@shared_task(name="interop.add")
def add(x, y):
    _go_only()


@shared_task(name="interop.xsum")
def xsum(values):
    _go_only()


@shared_task(name="interop.echo")
def echo(*args, **kwargs):
    _go_only()


@shared_task(name="interop.fail")
def fail(message):
    _go_only()


@shared_task(name="interop.sleep")
def sleep(seconds):
    _go_only()


@shared_task(name="interop.progress")
def progress(steps, delay=0):
    _go_only()


@shared_task(name="interop.retry")
def retry(times):
    _go_only()


@shared_task(name="interop.counter")
def counter(key, sleep=0):
    _go_only()


@shared_task(name="interop.request")
def request_context():
    _go_only()


# The stubs by short name (module-level shared_task proxies: they resolve to
# the current Celery app when called).
TASKS = {
    "add": add, "xsum": xsum, "echo": echo, "fail": fail, "sleep": sleep,
    "progress": progress, "retry": retry, "counter": counter,
    "request": request_context,
}


# --- routes ---------------------------------------------------------------

def _celery() -> Celery:
    return current_app.extensions["celery"]


def _send(short_name, args=(), kwargs=None, **options):
    """Sends <namespace>.<short_name> through this Flask app's Celery app:
    via the registered task (.apply_async) when there is one, else by name."""
    celery_app = _celery()
    name = f"{current_app.config['TASK_NAMESPACE']}.{short_name}"
    if name in celery_app.tasks:
        return celery_app.tasks[name].apply_async(args, kwargs or {}, **options)
    return celery_app.send_task(name, args=list(args), kwargs=kwargs or {}, **options)


def _json_value(value):
    if isinstance(value, BaseException):
        return {"exc_type": type(value).__name__, "exc_message": str(value)}
    return value


def _routes(app):
    from flask import Blueprint

    bp = Blueprint("interop", __name__)

    @bp.post("/add")
    def add_route():
        body = request.get_json(force=True)
        r = _send("add", (body["x"], body["y"]))
        return jsonify(result_id=r.id), 202

    @bp.post("/echo")
    def echo_route():
        body = request.get_json(force=True)
        r = _send("echo", body.get("args", []), body.get("kwargs", {}))
        return jsonify(result_id=r.id), 202

    @bp.post("/fail")
    def fail_route():
        body = request.get_json(force=True)
        r = _send("fail", (body["message"],))
        return jsonify(result_id=r.id), 202

    @bp.post("/request")
    def request_route():
        body = request.get_json(silent=True) or {}
        r = _send("request", headers=body.get("headers"))
        return jsonify(result_id=r.id), 202

    @bp.post("/tasks/<short_name>")
    def task_route(short_name):
        body = request.get_json(silent=True) or {}
        r = _send(short_name, body.get("args", []), body.get("kwargs", {}))
        return jsonify(result_id=r.id), 202

    @bp.get("/result/<result_id>")
    def result_route(result_id):
        r = AsyncResult(result_id, app=_celery())
        state = r.state
        ready = state in ("SUCCESS", "FAILURE", "REVOKED")
        return jsonify(state=state, ready=ready,
                       result=_json_value(r.result) if ready else None)

    return bp
