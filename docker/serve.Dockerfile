# The prediction server: core install only (FastAPI + ONNX Runtime, no torch), as user modelyard.
# docker/build_images.py stages the build context (wheelhouse and bundle); docs/containers.md.
#   EXTRAS=registry            -> modelyard-serve-registry (MLflow's client: serves
#                                 MODELYARD_BUNDLE=models:/NAME@ALIAS, pulled at start)
#   EXTRAS=ui,monitor,registry -> modelyard-app (the web UI and the monitor beside the server)
#   BUNDLE                     -> a bundle directory in the context, baked in at /srv/bundle
ARG BASE=python:3.11-slim
FROM ${BASE}

# Each ARG is declared just before its first use: an argument in scope is part of every later
# step's cache key, so a new modelyard wheel or bundle leaves the dependency layer cached.
# Paths are relative to the build context. DEPS: every dependency wheel, resolved on the host
# with -c requirements.lock, plus pip's own wheel (bind-mounted, so no wheel stays in a layer;
# installed with --no-index: no network during the build).
ARG DEPS=wheels/deps

ENV VIRTUAL_ENV=/opt/modelyard \
    PATH=/opt/modelyard/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELYARD_HOME=/var/lib/modelyard \
    MODELYARD_HOST=0.0.0.0 \
    MODELYARD_BUNDLE=/srv/bundle \
    PORT=8080

# The virtualenv has no pip: pip runs from its wheel in the mount. The packages' own test suites
# go (numpy's alone is 15 MB): a directory named tests holding test_*.py or conftest.py, unless
# code outside the suites names it (PACKAGE.tests): some packages ship modules under that name
# (Evidently's evidently.legacy.tests is its test API, needed by `modelyard monitor`). The user
# and its writable working directory (default SQLite prediction log, spool, registry download
# cache) come here too.
RUN --mount=type=bind,source=${DEPS},target=/tmp/deps \
    python3 -m venv --without-pip ${VIRTUAL_ENV} \
 && pip_wheel=$(ls /tmp/deps/pip-*.whl) \
 && ${VIRTUAL_ENV}/bin/python ${pip_wheel}/pip install --quiet --no-cache-dir --no-index \
        --no-deps $(ls /tmp/deps/*.whl | grep -v /pip-) \
 && ${VIRTUAL_ENV}/bin/python -c "import re, shutil, sys; from pathlib import Path; \
root = Path(sys.argv[1]); \
suites = {'.'.join(d.relative_to(root).parts): d for d in root.rglob('tests') if d.is_dir() \
    and (any(d.glob('test_*.py')) or (d / 'conftest.py').is_file())}; \
code = (f for f in root.rglob('*.py') if 'tests' not in f.relative_to(root).parts[:-1]); \
named = {n for f in code for n in re.findall(r'[\w.]+\.tests\b', f.read_text(errors='replace'))}; \
[shutil.rmtree(d, ignore_errors=True) for n, d in suites.items() if n not in named]" \
        $(${VIRTUAL_ENV}/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
 && useradd --uid 10001 --user-group --no-create-home --home-dir ${MODELYARD_HOME} \
        --shell /usr/sbin/nologin modelyard \
 && mkdir -p ${MODELYARD_HOME} /srv \
 && chown modelyard:modelyard ${MODELYARD_HOME}

# APP: the modelyard wheel, installed with the extras named in EXTRAS (their wheels are in DEPS:
# pip stops here if one is missing).
ARG APP=wheels/app
ARG EXTRAS=""
RUN --mount=type=bind,source=${DEPS},target=/tmp/deps --mount=type=bind,source=${APP},target=/tmp/app \
    pip_wheel=$(ls /tmp/deps/pip-*.whl) \
 && ${VIRTUAL_ENV}/bin/python ${pip_wheel}/pip install --quiet --no-cache-dir --no-index \
        --find-links /tmp/app --find-links /tmp/deps -c /tmp/deps/requirements.lock \
        "modelyard${EXTRAS:+[${EXTRAS}]}" \
 && ${VIRTUAL_ENV}/bin/python ${pip_wheel}/pip check --quiet \
 && modelyard --help >/dev/null

ARG BUNDLE=bundle
# Last, so that another bundle reuses every layer above. An empty directory when none is baked:
# then MODELYARD_BUNDLE=models:/NAME@ALIAS (with MODELYARD_REGISTRY_URI) pulls one at start.
COPY ${BUNDLE}/ /srv/bundle/

USER 10001:10001
WORKDIR /var/lib/modelyard
# The port: --port, else MODELYARD_PORT, else PORT (Cloud Run sets it; 8080 here by default).
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/ready' % (os.environ.get('MODELYARD_PORT') or os.environ.get('PORT') or '8080'), timeout=2)"]
# Exec form: modelyard is PID 1 and receives SIGTERM itself (drain with /ready 503, then stop).
ENTRYPOINT ["modelyard", "serve"]
