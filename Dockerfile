# syntax=docker/dockerfile:1

# (The line above is a parser directive: BuildKit honours it only before any comment or instruction.)
# One image, two roles: the API (default command) and the worker (`python rq_worker.py`).
# The base is pinned to a Python release on Debian 13; bump both stages together.

FROM python:3.11.17-slim-trixie AS build
WORKDIR /src
COPY requirements.txt .
RUN pip install --no-cache-dir --prefix=/install -r requirements.txt

FROM python:3.11.17-slim-trixie
# MALLOC_ARENA_MAX: fewer glibc arenas, less fragmentation from threads handling multi-MB bodies.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    APP_ENV=production \
    LOG_FORMAT=json \
    PORT=5000
RUN groupadd --system --gid 10001 resizer \
 && useradd --system --uid 10001 --gid resizer --home-dir /app --shell /usr/sbin/nologin resizer
WORKDIR /app
COPY --from=build /install /usr/local
COPY settings.py wsgi.py rq_worker.py gunicorn.conf.py ./
COPY resizer ./resizer
# No secrets in the image: every credential comes from the environment at run time.
USER resizer:resizer
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5000'), timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
