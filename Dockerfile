# jaxrun on an NVIDIA GPU: CUDA 12 runtime + cuDNN, Python 3.12, jaxrun with the cuda12 extra (jax[cuda12] + jax-triton).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv

WORKDIR /workspace/jaxrun
COPY . .
RUN pip install --upgrade pip && pip install -e ".[cuda12]"

# Shards, runs and the compilation cache belong on volumes, not in the image.
VOLUME ["/workspace/jaxrun/data", "/workspace/jaxrun/runs", "/root/.cache/jaxrun"]

CMD ["python", "-m", "jaxrun.train"]
