"""gunicorn settings for the API (``gunicorn -c gunicorn.conf.py wsgi:app``).

Settings are validated here, in the master, so a bad variable stops the server
at start with a message naming it instead of crash-looping every worker.
"""

import os
import shutil
import sys
import tempfile

from settings import Settings, SettingsError

try:
    _settings = Settings.from_env()
except SettingsError as exc:
    sys.stderr.write(f"gunicorn: configuration error: {exc}\n")
    sys.exit(2)

bind = f"{os.environ.get('BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
# The API only parses requests and talks to Redis and S3 (I/O bound), so a few
# processes with threads each; the CPU belongs to the resize workers.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
worker_class = "gthread"
# Each worker proves it is alive by touching a file (os.utime) at every turn of its event loop: hundreds of times
# a second under load. In the default temporary folder (on disk here and in most containers) every touch dirties
# an inode for the filesystem's journal, and Redis's appendfsync-always fsyncs on the same disk commit that journal
# hundreds of times a second: with the file in memory, 1x1 jobs ran 7-13% faster (docs/performance.md). gunicorn's
# documentation recommends a tmpfs for it; /dev/shm is one on Linux and in Docker. Used only if a file can be made
# there now (it may be missing, read-only or full): else gunicorn's default.
def _heartbeat_dir(folder: str = "/dev/shm") -> str | None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return folder
    except OSError:
        return None


worker_tmp_dir = _heartbeat_dir()
# gunicorn's control socket (runtime management with gunicornc) is not used here: no admin socket in
# $HOME/.gunicorn, which every server on a host would share and which the image's user cannot create.
control_socket_disable = True
timeout = 30
# On a stop, requests in flight get this long to end: more than a POST ?wait= (or a long poll) may wait for its
# job (MAX_WAIT, 20 s), so an accepted job's answer is not cut off; compose's stop_grace_period is longer still.
graceful_timeout = 30
keepalive = 5
# Bounded header sizes; the body limit is MAX_UPLOAD_BYTES, enforced by the app.
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-" if os.environ.get("ACCESS_LOG", "1") == "1" else None
if _settings.log_format == "json":
    access_log_format = ('{"logger": "access", "remote": "%(h)s", "request": "%(r)s", "status": %(s)s, '
                         '"bytes": "%(B)s", "ms": %(M)s, "request_id": "%({x-request-id}o)s"}')
else:
    access_log_format = '%(h)s "%(r)s" %(s)s %(B)sB %(M)sms id=%({x-request-id}o)s'
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "resizer-api"

# prometheus-client's multiprocess mode: every worker writes its metrics here,
# /metrics on any worker reports them all.  Set before any worker imports it.
# A folder made here (none given) is removed when the server exits; one given is only emptied at start.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="resizer-metrics-")
    os.environ["RESIZER_OWNS_METRICS_DIR"] = "1"  # kept in the environment: a reload (HUP) reads this file again
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
shutil.rmtree(_metrics_dir, ignore_errors=True)
os.makedirs(_metrics_dir, exist_ok=True)


def post_worker_init(worker):
    from resizer.logs import configure_logging

    configure_logging(_settings, "api")


def on_exit(server):
    if os.environ.get("RESIZER_OWNS_METRICS_DIR") == "1":
        shutil.rmtree(_metrics_dir, ignore_errors=True)  # else every start left one behind in /tmp


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_starting(server):
    # Workers fork from this process, so they inherit both changes:
    # say nothing about the server software in the Server header, and answer
    # requests gunicorn rejects before the app (a URL over 8 KB, a malformed
    # request line) in the API's JSON error shape instead of an HTML page.
    import gunicorn.http.wsgi
    import gunicorn.util

    gunicorn.http.wsgi.SERVER = "resizer"
    gunicorn.util.write_error = _json_error


def _json_error(sock, status_int, reason, mesg):
    import json

    from gunicorn.util import write_nonblock

    from resizer import errors  # the one error family: codes and messages come from there

    if status_int == 414:
        error = errors.UriTooLong(f"The URL is too long ({mesg}); send options in the request body instead.")
    elif status_int < 500:
        error = errors.InvalidRequest(f"{reason}: {mesg}.")
    else:
        error = errors.InternalError()
    body = json.dumps({"success": False, "error": error.to_dict()})
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    write_nonblock(sock, (head + body).encode("latin-1", "replace"))
