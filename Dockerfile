# GPU image: `docker run --gpus all IMAGE` runs `dvc repro` with CUDA required in validation.
# CUDA 13 + cuDNN 9: what onnxruntime-gpu 1.31 needs ("Require cuDNN 9.* and CUDA 13.*"),
# and the CUDA line of torch 2.13's default wheels.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 (the project's version) from deadsnakes; git for DVC and the run tags.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent git \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 app \
 && python3.11 -m venv /opt/venv \
 && mkdir -p /app/data /app/mlruns /cache \
 && chown -R app:app /opt/venv /app /cache
ENV PATH=/opt/venv/bin:$PATH
USER app
WORKDIR /app

# Dependency layer, cached apart from the source: the exact pins of pyproject.toml
# (tests/test_repo.py fails when the two drift apart).
RUN pip install \
    "torch==2.13.0" \
    "hydra-core==1.3.8" \
    "omegaconf==2.3.1" \
    "mlflow==3.17.2" \
    "dvc==3.67.1" \
    "onnx==1.23.2" \
    "onnxruntime-gpu==1.31.1" \
    "numpy==2.4.6" \
    "pandas==3.1.1" \
    "pydantic==2.14.3" \
    "tokenizers==0.23.3" \
    "scikit-learn==1.9.1" \
    "requests==2.34.2" \
    "tqdm==4.70.1" \
    "gensim==4.4.0" \
    "matplotlib==3.11.2"

COPY --chown=app:app . /app
RUN pip install --no-deps -e .

# Volumes: data (data/), the DVC cache, and the MLflow store (the database and, as MLflow
# puts them beside a SQLite store, the artifacts under mlruns/).
# For offline use, also mount the dataset copies and set RB_OFFLINE_DIR to them.
VOLUME ["/app/data", "/cache", "/app/mlruns"]
ENV MLFLOW_TRACKING_URI=sqlite:////app/mlruns/mlflow.db

# A throw-away git repository (DVC needs one), the shared cache, the GPU profile
# (CUDA required in validation), then the whole pipeline.
CMD ["sh", "-c", "git init -q . 2>/dev/null; dvc config --local cache.dir /cache && python -m pipeline.config export=gpu && dvc repro"]
