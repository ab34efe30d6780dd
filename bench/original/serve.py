"""The original design's API as it ran: Flask's own server (``app.run``), threaded, one process."""

from __future__ import annotations

import argparse

from bench.original.app import api

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    api.run(host="127.0.0.1", port=args.port, threaded=True, use_reloader=False)
