"""The original design's API as it ran: Flask's own server (``app.run``), threaded, one process.

What the original project's ``app.py`` starts, less its development reloader (a file watcher).  Werkzeug's server
closes the connection after every response and starts a thread per connection, so each POST and each 10 ms poll
costs a connection and a thread: that, not the design's queue, is most of what separates it from the same app
under gunicorn.
"""

from __future__ import annotations

import argparse

from bench.original.app import api

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    api.run(host="127.0.0.1", port=args.port, threaded=True, use_reloader=False)
