# Training: modelyard with its `train` extra (torch, Lightning, MLflow, Optuna, DVC), for
# deploy/kubernetes/pytorchjob.yaml and a Vertex AI custom job. docker/build_images.py stages the
# context (a wheelhouse made with -c requirements.lock); docs/containers.md.
#   TORCH_VARIANT=cpu   torch==2.13.0's CPU wheel (what builds and is tested here)
#   TORCH_VARIANT=cuda  torch==2.13.0 from PyPI: the CUDA build, its CUDA libraries as nvidia-*
#                       wheels; the node needs only the NVIDIA driver (container toolkit)
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV VIRTUAL_ENV=/opt/modelyard \
    PATH=/opt/modelyard/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELYARD_HOME=/var/lib/modelyard

# As in serve.Dockerfile: each ARG just before its first use (cache keys), wheels bind-mounted
# and installed with --no-index, no pip left in the image. The torch wheel in DEPS must be the
# variant asked for: checked here, so a CPU image never ships a CUDA torch or the reverse.
ARG DEPS=wheels/deps
ARG TORCH_VARIANT=cpu
RUN --mount=type=bind,source=${DEPS},target=/tmp/deps \
    python3 -m venv --without-pip ${VIRTUAL_ENV} \
 && pip_wheel=$(ls /tmp/deps/pip-*.whl) \
 && ${VIRTUAL_ENV}/bin/python ${pip_wheel}/pip install --quiet --no-cache-dir --no-index \
        --no-deps $(ls /tmp/deps/*.whl | grep -v /pip-) \
 && ${VIRTUAL_ENV}/bin/python -c "import sys, torch; cuda = torch.version.cuda is not None; \
sys.exit(0 if cuda == ('${TORCH_VARIANT}' == 'cuda') else \
f'torch {torch.__version__} is not the ${TORCH_VARIANT} build asked for')" \
 && useradd --uid 10001 --user-group --no-create-home --home-dir ${MODELYARD_HOME} \
        --shell /usr/sbin/nologin modelyard \
 && mkdir -p ${MODELYARD_HOME} \
 && chown modelyard:modelyard ${MODELYARD_HOME}

ARG APP=wheels/app
ARG EXTRAS=train
RUN --mount=type=bind,source=${DEPS},target=/tmp/deps --mount=type=bind,source=${APP},target=/tmp/app \
    pip_wheel=$(ls /tmp/deps/pip-*.whl) \
 && ${VIRTUAL_ENV}/bin/python ${pip_wheel}/pip install --quiet --no-cache-dir --no-index \
        --find-links /tmp/app --find-links /tmp/deps -c /tmp/deps/requirements.lock \
        "modelyard[${EXTRAS}]" \
 && ${VIRTUAL_ENV}/bin/python ${pip_wheel}/pip check --quiet \
 && modelyard --help >/dev/null

USER 10001:10001
# Runs, bundles, the tracking store and data go under here unless the job's config says otherwise
# (mount a volume, or point paths.* and the tracking URI at a bucket and a server).
WORKDIR /var/lib/modelyard
# The job specs give the command: `modelyard data fetch ...`, `python -m torch.distributed.run ...`.
ENTRYPOINT ["modelyard"]
CMD ["--help"]
