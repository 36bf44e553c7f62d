"""How one try against an OpenAI-compatible server failed, and whether another try can help.

``OpenAIEngine`` (and its scoring) retry 429, 5xx, timeouts and dropped connections, and give up at once on
anything a retry would only repeat (any other 4xx, a 200 it cannot read). The whole decision lives here, in
``_classify``, so every request kind retries alike; what comes out is one short line for ``Attempt.error``, with
the server's own message when it sent one. Kept apart from the engine so that ``openai_scoring.py``, which the
engine imports, can use the same failures without a circular import. ``openai`` is imported inside ``_classify``
only.
"""

from __future__ import annotations

import re
from typing import Any

from rlaif.engines.base import ERROR_CHARS, one_line

RETRY_STATUS = frozenset({408, 409, 429})  # besides every 5xx: timeouts, conflicts and rate limits pass


class _Failure(Exception):
    """Why one try failed, and whether another try can help; raised when a request gives up."""

    def __init__(self, message: str, status: int | None, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.message, self.status, self.retryable, self.retry_after_s = message, status, retryable, retry_after_s


class _BadResponse(Exception):
    """The server answered 200 with something we cannot read; retrying would get the same."""


def _first_choice(response: Any) -> Any:
    choices = getattr(response, "choices", None)
    if not choices:
        raise _BadResponse(f"response has no choices: {str(response)[:ERROR_CHARS]}")
    return choices[0]


def _classify(exc: Exception, timeout_s: float) -> _Failure:
    """Turn an exception from one try into a short error line and whether a retry can help.

    Anything that is not an API, transport or response problem is a bug and is raised again.
    """
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in RETRY_STATUS or status >= 500
        return _Failure(f"HTTP {status}: {_status_detail(exc)}", status, retryable, _retry_after(exc))
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return _Failure(f"timeout after {timeout_s:g} s", None, True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return _Failure(f"connection error: {one_line(detail)}", None, True)
    if isinstance(exc, (_BadResponse, openai.APIResponseValidationError)):
        return _Failure(f"bad response: {one_line(str(exc))}", None, False)
    raise exc


def _status_detail(exc: Any) -> str:
    """The server's own error message (vLLM and OpenAI put it in ``error.message``), else the client's summary."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        for key in ("message", "detail"):
            if isinstance(inner.get(key), str):
                return one_line(inner[key])
    return one_line(re.sub(r"^Error code: \d+ - ", "", str(exc.message)))


def _retry_after(exc: Any) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (AttributeError, TypeError, ValueError):
        return None
