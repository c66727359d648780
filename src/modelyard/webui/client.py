"""The UI's only way to the model: the prediction server's HTTP API, with every failure turned
into one sentence a person can read (a 4xx's own message, or what went wrong on the way).

Nothing here knows a project family; the family views build requests from ``/info`` and the
OpenAPI schema and hand them to :class:`ServerClient`.
"""

from dataclasses import dataclass
from typing import Any

import httpx

#: Seconds the UI waits for one answer; a NILM day or an image batch is well inside it.
DEFAULT_TIMEOUT_S = 30.0
#: Field errors quoted in a sentence; the rest are counted.
MAX_QUOTED_ERRORS = 3


class ServerAnswerError(Exception):
    """A request the server refused or could not answer; ``str(error)`` is the sentence to show
    (never a traceback). ``status`` is the HTTP status, or None when no answer came back."""

    def __init__(self, sentence: str, status: int | None = None) -> None:
        super().__init__(sentence)
        self.status = status


@dataclass(frozen=True)
class Answer:
    """A successful answer: the JSON body and the headers the UI uses (``X-Prediction-ID``)."""

    body: Any
    prediction_id: str | None


class ServerClient:
    """A small synchronous client for one prediction server (``base_url`` such as
    ``http://127.0.0.1:8000``), optionally with an API key sent as ``X-API-Key``."""

    def __init__(
        self, base_url: str, api_key: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def info(self) -> dict[str, Any]:
        """``GET /info``: what is served (project, task, model, version, metrics, details)."""
        body = self._send("GET", "/info").body
        if not isinstance(body, dict) or "task" not in body:
            raise ServerAnswerError(f"{self.base_url} does not look like a modelyard server")
        return body

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the request schema the forms are generated from."""
        body = self._send("GET", "/openapi.json").body
        if not isinstance(body, dict):
            raise ServerAnswerError(f"{self.base_url} served no OpenAPI schema")
        return body

    def predict_json(self, payload: Any) -> Answer:
        """``POST /predict`` with a JSON body (NILM series, tabular rows)."""
        return self._send("POST", "/predict", json=payload)

    def predict_file(self, filename: str, content: bytes, content_type: str) -> Answer:
        """``POST /predict`` with one uploaded file (an image), as the form field ``file``."""
        return self._send("POST", "/predict", files={"file": (filename, content, content_type)})

    def feedback(self, payload: Any) -> Answer:
        """``POST /feedback``: the true value(s) of logged predictions."""
        return self._send("POST", "/feedback", json=payload)

    def get_json(self, path: str) -> Any:
        """Any other JSON route of the server (e.g. ``/examples``)."""
        return self._send("GET", path).body

    def get_bytes(self, path: str) -> bytes:
        """A file route of the server (e.g. one shipped example)."""
        response = self._request("GET", path)
        return response.content

    def _send(self, method: str, path: str, **kwargs: Any) -> Answer:
        response = self._request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as error:
            raise ServerAnswerError(
                f"{method} {path} answered {response.status_code} without JSON",
                response.status_code,
            ) from error
        return Answer(body, response.headers.get("X-Prediction-ID"))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise ServerAnswerError(
                f"The server at {self.base_url} did not answer in time."
            ) from error
        except httpx.HTTPError as error:
            raise ServerAnswerError(
                f"Cannot reach the server at {self.base_url} ({type(error).__name__})."
            ) from error
        if response.status_code >= 400:
            raise ServerAnswerError(refusal_sentence(response), response.status_code)
        return response


def refusal_sentence(response: httpx.Response) -> str:
    """The server's own reason for a 4xx/5xx as a sentence: its ``detail`` string, or the first
    field errors as "field: message"."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return _sentence(detail)
    if isinstance(detail, list) and detail:
        quoted = [_field_error(item) for item in detail[:MAX_QUOTED_ERRORS]]
        more = len(detail) - len(quoted)
        tail = f" (and {more} more)" if more > 0 else ""
        return _sentence("; ".join(quoted) + tail)
    return f"The server refused the request (HTTP {response.status_code})."


def _field_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = [str(part) for part in item.get("loc", []) if part != "body"]
    message = str(item.get("msg", "invalid"))
    return f"{'.'.join(where)}: {message}" if where else message


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
