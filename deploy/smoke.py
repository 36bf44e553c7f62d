"""The image's own smoke test, run by the Dockerfile after the install (and by tests/test_containers.py here).

It imports what every container command needs (DuckDB, Prefect's server, the CLI, the flows) and builds the
openai engine with its HTTP client, the part that breaks when the image's openai and the project's code disagree
about the HTTP library. No server is needed: the client is made and closed without a request.

    python3 deploy/smoke.py
"""

from __future__ import annotations

import asyncio
import sys


def main() -> int:
    import duckdb
    import prefect.server.api.server  # noqa: F401  (the server `prefect server start` runs)

    import rlaif.cli  # noqa: F401
    import rlaif.flows.sl_cai  # noqa: F401
    from rlaif.engines.openai_engine import OpenAIEngine, openai_http_library

    url = "http://127.0.0.1:8000/v1"
    engine = OpenAIEngine([url], "smoke", concurrency=4)
    client = engine._make_client(url)  # the client every request goes through
    asyncio.run(client.close())
    duckdb.connect().execute("SELECT 1").fetchone()
    print(f"smoke ok: openai engine built on {openai_http_library().__name__}, duckdb {duckdb.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
