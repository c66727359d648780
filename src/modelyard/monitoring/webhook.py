"""Calling for help: on an alert, POST the verdict's gist to a webhook.

Two shapes:

* a GitHub ``repository_dispatch`` (the URL is ``https://api.github.com/repos/OWNER/REPO/
  dispatches``): ``{"event_type": "monitor-alert", "client_payload": {...}}`` with the token
  from ``$GITHUB_TOKEN`` (or the variable named by ``token_env``), so that a workflow listening
  for ``monitor-alert`` can retrain (docs/monitoring.md);
* anything else: the same payload as a plain JSON POST (Slack-like receivers, an internal hook).

The call is bounded in time and never raises: the outcome is returned and reported, because a
webhook that is down must not hide the verdict (or change the exit code).
"""

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

import httpx

EVENT_TYPE = "monitor-alert"
DEFAULT_TOKEN_ENV = "GITHUB_TOKEN"
TIMEOUT_S = 10.0
_DISPATCH = re.compile(r"^https://api\.github\.com/repos/[^/]+/[^/]+/dispatches/?$")


@dataclass(frozen=True)
class WebhookOutcome:
    url: str
    delivered: bool
    status: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def alert_payload(verdict: dict[str, Any]) -> dict[str, Any]:
    """The gist of a verdict: few top-level keys (GitHub allows at most 10 in client_payload)."""
    accuracy = verdict["realised_accuracy"]
    return {
        "model": verdict["model"]["name"],
        "version": verdict["model"]["version"],
        "family": verdict["model"]["family"],
        "reasons": verdict["reasons"],
        "drift_detected": verdict["drift"]["detected"],
        "drift_share": verdict["drift"]["share"],
        "drifted_columns": verdict["drift"]["drifted_columns"],
        "below_promoted": accuracy["below_promoted"],
        "window": {k: verdict["window"][k] for k in ("predictions", "first_at", "last_at", "log")},
        "generated_at": verdict["generated_at"],
    }


def is_github_dispatch(url: str) -> bool:
    return bool(_DISPATCH.match(url))


def webhook_request(
    url: str, verdict: dict[str, Any], token_env: str = DEFAULT_TOKEN_ENV
) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and headers to send to ``url``; ValueError when a GitHub dispatch lacks
    its token."""
    payload = alert_payload(verdict)
    headers = {"User-Agent": "modelyard-monitor"}
    if not is_github_dispatch(url):
        return payload, headers
    token = os.environ.get(token_env, "")
    if not token:
        raise ValueError(f"${token_env} is not set: no token for the GitHub dispatch")
    headers |= {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
    return {"event_type": EVENT_TYPE, "client_payload": payload}, headers


def send_alert(
    url: str,
    verdict: dict[str, Any],
    token_env: str = DEFAULT_TOKEN_ENV,
    timeout_s: float = TIMEOUT_S,
) -> WebhookOutcome:
    """POST the alert to ``url``; the outcome, whatever happened."""
    try:
        payload, headers = webhook_request(url, verdict, token_env)
        response = httpx.post(url, json=payload, headers=headers, timeout=timeout_s)
    except ValueError as exc:
        return WebhookOutcome(url, False, None, str(exc))
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return WebhookOutcome(url, False, None, f"{type(exc).__name__}: {exc}")
    delivered = response.is_success
    detail = "delivered" if delivered else f"refused: {response.text[:200]}"
    return WebhookOutcome(url, delivered, response.status_code, detail)
