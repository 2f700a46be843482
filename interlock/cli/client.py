"""A small HTTP client for the CLI's client commands; every failure is an :class:`ApiError`."""

from __future__ import annotations

from typing import Any, cast

import requests

from interlock.errors import InterlockError

__all__ = ["Client", "ApiError"]


class ApiError(InterlockError):
    """The API could not be reached, answered an error, or answered something that is not JSON."""


class Client:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.timeout = timeout
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach the Interlock API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ApiError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        try:
            return cast(dict[str, Any], response.json())  # every route answers a JSON object
        except requests.JSONDecodeError as exc:
            raise ApiError(f"{method} {path} answered {response.status_code} with a body that is not JSON") from exc

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/agent/execute", json=body)

    def status(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/agent/status/{task_id}")

    def history(self, workflow_id: str) -> dict[str, Any]:
        return self._call("GET", f"/agent/history/{workflow_id}")

    def resume(self, workflow_id: str) -> dict[str, Any]:
        return self._call("POST", f"/agent/resume/{workflow_id}")

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/agent/cancel/{task_id}")

    def dead_letters(self, queue: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/dlq", params={"queue": queue} if queue else None)

    def replay(self, task_id: str | None = None, *, queue: str | None = None) -> dict[str, Any]:
        if task_id:
            return self._call("POST", f"/dlq/{task_id}/replay")
        return self._call("POST", "/dlq/replay", params={"queue": queue})

    def purge(self, task_id: str | None = None, *, queue: str | None = None) -> dict[str, Any]:
        if task_id:
            return self._call("DELETE", f"/dlq/{task_id}")
        return self._call("DELETE", "/dlq", params={"queue": queue})
