#!/usr/bin/env bash
# Multi-node DDP training with torchrun: run this script once on every node.
#
#   # node 0 (also the rendezvous host)          # node 1
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 \      NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 \
#   JOB_ID=nilm-0001 deploy/torchrun/train_ddp.sh JOB_ID=nilm-0001 deploy/torchrun/train_ddp.sh
#
# Extra arguments are Hydra overrides (experiment=baseline, project=eurosat, ...). torchrun starts
# NPROC_PER_NODE processes per node; Lightning recognises them (TorchElasticEnvironment) and joins
# them into one process group: NCCL on GPUs, gloo on CPUs. JOB_ID must be the same on every node:
# it is the run name, and ranks other than 0 refuse to start without one (they would otherwise
# each pick a different timestamped run directory).
#
# Every node reads paths.raw and paths.prepared (run `modelyard data fetch` and `data prepare`
# on each node, or share MODELYARD_HOME over a network filesystem); only global rank 0 writes the
# run directory and talks to the tracking server.
set -euo pipefail

: "${NNODES:?number of nodes}" "${NODE_RANK:?0 .. NNODES-1}" "${MASTER_ADDR:?host of node 0}"
: "${JOB_ID:?a run name shared by every node, e.g. the scheduler job id}"
MASTER_PORT="${MASTER_PORT:-29500}"
PYTHON="${PYTHON:-.venv/bin/python}"

if [[ -z "${ACCELERATOR:-}" ]]; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        ACCELERATOR=gpu
    else
        ACCELERATOR=cpu
    fi
fi
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
    # one process per GPU; on CPU nodes two processes (set NPROC_PER_NODE to taste)
    if [[ "${ACCELERATOR}" == gpu ]]; then NPROC_PER_NODE="$(nvidia-smi -L | wc -l)"; else NPROC_PER_NODE=2; fi
fi

exec "${PYTHON}" -m torch.distributed.run \
    --nnodes="${NNODES}" --node-rank="${NODE_RANK}" --nproc-per-node="${NPROC_PER_NODE}" \
    --master-addr="${MASTER_ADDR}" --master-port="${MASTER_PORT}" \
    -m modelyard train trainer=ddp \
    trainer.accelerator="${ACCELERATOR}" trainer.devices="${NPROC_PER_NODE}" \
    trainer.num_nodes="${NNODES}" run_name="${JOB_ID}" "$@"
