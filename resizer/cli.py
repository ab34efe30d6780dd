"""``resizer``: a command-line client of the public HTTP API.

    resizer submit photo.jpg --width 800 --format webp --wait -o out.webp
    resizer submit *.jpg --width 300 --wait -o thumbs/      # several files, progress bar
    resizer submit photo.jpg --width 800 --fit cover --height 600 --gravity smart --watermark logo --wait
    resizer status TOKEN
    resizer watermark put logo logo.png                     # then list, delete NAME

The service URL comes from --url or RESIZER_URL (default http://127.0.0.1:5000),
the API key from --api-key or RESIZER_API_KEY.  Exit codes: 0 success, 1 a job
ended FAILURE, 2 usage or a local file problem, 3 the request was refused (4xx),
4 authentication failed (401/403), 5 the service is unavailable (5xx, network).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

from .imaging.spec import ANCHORS, FITS, FORMATS, GRAVITIES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_AUTH, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif", "gif": "gif"}


class CliError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class Client:
    url: str
    api_key: str | None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        self.http = requests.Session()
        if self.api_key:
            self.http.headers["Authorization"] = f"Bearer {self.api_key}"
        self.http.headers["User-Agent"] = "resizer-cli/1"

    def _call(self, method: str, path: str, **kwargs) -> dict:
        return self._request(method, path, **kwargs)[1]

    def _request(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        """(HTTP status, JSON body) of a call that succeeded; a CliError with the API's message otherwise."""
        try:
            r = self.http.request(method, self.url.rstrip("/") + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise CliError(f"cannot reach the service at {self.url}: {exc.__class__.__name__}", EXIT_UNAVAILABLE)
        if r.status_code == 204:
            return r.status_code, {}
        try:
            body = r.json()
        except ValueError:
            raise CliError(f"{self.url} answered {r.status_code} without JSON; is this the resizer API?",
                           EXIT_UNAVAILABLE)
        if r.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            code = {401: EXIT_AUTH, 403: EXIT_AUTH}.get(r.status_code,
                                                         EXIT_UNAVAILABLE if r.status_code >= 500 else EXIT_REFUSED)
            hint = " (set RESIZER_API_KEY or --api-key)" if code == EXIT_AUTH else ""
            raise CliError(f"{error.get('code', r.status_code)}: {error.get('message', r.reason)}{hint}", code)
        return r.status_code, body

    def submit(self, path: Path, options: dict, wait: float = 0) -> tuple[str, dict | None]:
        """The job's token and, if it ended within ``wait`` seconds (the server waits: one request), its status."""
        data = path.read_bytes()
        form = {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in options.items()}
        def post(params: dict | None) -> tuple[int, dict]:
            return self._request("POST", "/api/v1/resize", files={"image": (path.name, data)}, data=form,
                                 params=params)

        try:
            status, body = post({"wait": wait} if wait else None)
        except CliError as exc:
            if not wait or "parameter 'wait'" not in str(exc):
                raise
            status, body = post(None)  # a server from before POST ?wait= refused it (nothing queued): long-poll
        return body["token"], (body if status == 201 else None)

    def status(self, token: str, wait: float = 0) -> dict:
        return self._call("GET", f"/api/v1/resize/{token}", params={"wait": wait} if wait else None)

    def wait(self, token: str, deadline: float) -> dict:
        end = time.monotonic() + deadline
        while True:
            body = self.status(token, wait=min(15.0, max(0.0, end - time.monotonic())))
            if body["status"] in ("SUCCESS", "FAILURE") or time.monotonic() >= end:
                return body
            time.sleep(0.2)  # the server may answer without waiting when it is busy

    def put_watermark(self, name: str, data: bytes, content_type: str) -> tuple[bool, dict]:
        """Store a watermark: (True if it replaced one of that name, its description)."""
        status, body = self._request("PUT", f"/api/v1/watermarks/{quote(name, safe='')}", data=data,
                                     headers={"Content-Type": content_type})
        return status == 200, body["watermark"]

    def watermarks(self) -> list[dict]:
        return self._call("GET", "/api/v1/watermarks")["watermarks"]

    def delete_watermark(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/watermarks/{quote(name, safe='')}")

    def download(self, url: str, target: Path) -> int:
        try:
            r = requests.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise CliError(f"cannot download the result: {exc.__class__.__name__}", EXIT_UNAVAILABLE)
        if r.status_code != 200:
            raise CliError(f"the result URL answered {r.status_code} (expired? try `resizer status`)",
                           EXIT_UNAVAILABLE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(r.content)
        return len(r.content)


def _options(args: argparse.Namespace) -> dict:
    opts = {}
    for name in ("width", "height", "fit", "gravity", "format", "quality", "background"):
        value = getattr(args, name)
        if value is not None:
            opts[name] = value
    if args.enlarge:
        opts["enlarge"] = "true"
    if args.variants:
        try:
            opts["variants"] = json.loads(args.variants)
        except ValueError:
            raise CliError("--variants must be a JSON list, e.g. '[{\"name\": \"s\", \"width\": 100}]'", EXIT_USAGE)
    mark = {k: getattr(args, f"watermark_{k}") for k in ("gravity", "opacity", "scale", "margin")}
    if args.watermark:
        opts["watermark"] = {"image": args.watermark, **{k: v for k, v in mark.items() if v is not None}}
    elif any(v is not None for v in mark.values()):
        raise CliError("--watermark-gravity/-opacity/-scale/-margin need --watermark NAME", EXIT_USAGE)
    return opts


def _target(source: Path, out: str | None, fmt: str, many: bool, taken: set[Path]) -> Path:
    ext = _EXTENSIONS.get(fmt, "jpg")
    if out is None:
        target = source.with_name(f"{source.stem}.resized.{ext}")
    elif many or out.endswith("/") or Path(out).is_dir():
        target = Path(out) / f"{source.stem}.{ext}"
        if target in taken:  # photo.png and photo.gif in one batch
            target = Path(out) / f"{source.stem}-{source.suffix.lstrip('.')}.{ext}"
    else:
        target = Path(out)
    taken.add(target)
    return target


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    options = _options(args)
    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise CliError(f"{f}: no such file", EXIT_USAGE)
    many = len(files) > 1
    progress = None
    if many or args.wait:
        from tqdm import tqdm

        progress = tqdm(total=len(files), unit="image", disable=not sys.stderr.isatty() or args.quiet,
                        desc="resizing")
    worst = EXIT_OK
    taken: set[Path] = set()
    for f in files:
        try:
            started = time.monotonic()
            token, body = client.submit(f, options, wait=min(15.0, args.timeout) if args.wait else 0)
            if not args.wait:
                print(f"{f}\t{token}")
                continue
            if body is None:  # not ended while the POST waited: long polls for the rest of the time
                body = client.wait(token, max(0.0, args.timeout - (time.monotonic() - started)))
            if body["status"] != "SUCCESS":
                error = body.get("error") or {"code": "timeout", "message": f"still {body['status']} after "
                                                                              f"{args.timeout:.0f} s"}
                print(f"{f}: {error['code']}: {error['message']} (token {token})", file=sys.stderr)
                worst = max(worst, EXIT_FAILED)
                continue
            first = next(iter(body["variants"].values()))
            target = _target(f, args.output, first["format"], many, taken)
            size = client.download(body["resized_image_url"], target)
            if not args.quiet:
                msg = f"{f} -> {target} ({first['width']}x{first['height']} {first['format']}, {size:,} bytes" + (
                    "; same upload and options as an earlier job: its outputs reused)" if body.get("reused") else ")")
                (progress.write if progress else print)(msg)
        except CliError as exc:
            if exc.code in (EXIT_AUTH, EXIT_UNAVAILABLE):
                raise
            print(f"{f}: {exc}", file=sys.stderr)
            worst = max(worst, exc.code)
        finally:
            if progress:
                progress.update()
    if progress:
        progress.close()
    return worst


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    body = client.status(args.token, wait=args.wait_seconds)
    print(json.dumps(body, indent=2))
    return EXIT_FAILED if body["status"] == "FAILURE" else EXIT_OK


# A watermark goes as the raw body with its own media type: what the bytes say, else the file's
# extension (the service sniffs the bytes anyway and names what is wrong with them).
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"RIFF", "image/webp"))
_BY_EXTENSION = {".png": "image/png", ".webp": "image/webp"}


def _media_type(path: Path, data: bytes) -> str:
    for magic, media_type in _MAGIC:
        if data.startswith(magic) and (media_type != "image/webp" or data[8:12] == b"WEBP"):
            return media_type
    if path.suffix.lower() in _BY_EXTENSION:
        return _BY_EXTENSION[path.suffix.lower()]
    raise CliError(f"{path}: not a PNG or WebP image; a watermark must be one (they keep transparency)", EXIT_USAGE)


def cmd_watermark(client: Client, args: argparse.Namespace) -> int:
    if args.action == "put":
        path = Path(args.file)
        if not path.is_file():
            raise CliError(f"{path}: no such file", EXIT_USAGE)
        data = path.read_bytes()
        replaced, mark = client.put_watermark(args.name, data, _media_type(path, data))
        print(f"{'replaced' if replaced else 'stored'} watermark {mark['name']}: "
              f"{mark['width']}x{mark['height']}, {mark['bytes']:,} bytes")
    elif args.action == "list":
        marks = client.watermarks()
        if args.json:
            print(json.dumps(marks, indent=2))
        elif not marks:
            print("no watermarks yet; store one with `resizer watermark put NAME FILE`")
        else:
            width = max(len(m["name"]) for m in marks)
            for m in marks:
                print(f"{m['name']:<{width}}  {m['width']:>5}x{m['height']:<5}  {m['bytes']:>10,} bytes")
    else:
        client.delete_watermark(args.name)
        print(f"deleted watermark {args.name}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resizer", description="Client of the resizer HTTP API.")
    parser.add_argument("--url", default=os.environ.get("RESIZER_URL", "http://127.0.0.1:5000"),
                        help="service URL (env RESIZER_URL)")
    parser.add_argument("--api-key", default=os.environ.get("RESIZER_API_KEY"), help="API key (env RESIZER_API_KEY)")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit one or more images")
    s.add_argument("files", nargs="+")
    s.add_argument("--width", type=int)
    s.add_argument("--height", type=int)
    s.add_argument("--fit", choices=FITS)
    s.add_argument("--gravity", choices=GRAVITIES)
    s.add_argument("--format", choices=FORMATS)
    s.add_argument("--quality", type=int)
    s.add_argument("--background", help="#rrggbb")
    s.add_argument("--enlarge", action="store_true")
    s.add_argument("--variants", help="JSON list of variant objects")
    s.add_argument("--watermark", metavar="NAME", help="draw this stored watermark (see `resizer watermark`)")
    s.add_argument("--watermark-gravity", choices=ANCHORS, help="where it sits (default south_east)")
    s.add_argument("--watermark-opacity", type=float, metavar="0..1", help="default 0.5")
    s.add_argument("--watermark-scale", type=float, metavar="0..1",
                   help="its width as a fraction of the output's (default: its own size)")
    s.add_argument("--watermark-margin", type=int, metavar="PX", help="pixels in from the edges (default 0)")
    s.add_argument("--wait", action="store_true", help="wait for the result and download it")
    s.add_argument("-o", "--output", help="output file (one input) or directory")
    s.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each job (default 300)")
    s.add_argument("-q", "--quiet", action="store_true")
    st = sub.add_parser("status", help="show a job's status")
    st.add_argument("token")
    st.add_argument("--wait", dest="wait_seconds", type=float, default=0, help="long-poll up to N seconds")
    w = sub.add_parser("watermark", help="store, list or delete watermark images (per API key)")
    wsub = w.add_subparsers(dest="action", required=True)
    put = wsub.add_parser("put", help="store a PNG or WebP image under NAME (replaces one of that name)")
    put.add_argument("name", help="a-z, 0-9, _ and -, up to 32 characters")
    put.add_argument("file")
    ls = wsub.add_parser("list", help="list the stored watermarks")
    ls.add_argument("--json", action="store_true", help="print the API's JSON list")
    rm = wsub.add_parser("delete", help="delete a watermark")
    rm.add_argument("name")
    return parser


COMMANDS = {"submit": cmd_submit, "status": cmd_status, "watermark": cmd_watermark}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args.url, args.api_key)
    try:
        return COMMANDS[args.command](client, args)
    except CliError as exc:
        print(f"resizer: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
