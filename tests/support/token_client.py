"""The client side of the Docker token protocol, for tests: a ``requests`` auth that answers the registry's
``Bearer`` challenge with a token from its realm (the project's token service) for the challenged scope, retries
once, and reuses the token for later requests, so a large upload is not sent twice."""

from __future__ import annotations

import re

import requests

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class TokenRequestError(Exception):
    """The token server refused the credentials (or answered something else than a token)."""

    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"token server answered HTTP {status}: {body[:300]}")


class RegistryTokenAuth(requests.auth.AuthBase):
    """Bearer-token client auth: answer the registry's challenge with a token from its realm, reuse it."""

    def __init__(self, username: str | None, password: str | None):
        self.username, self.password = username, password
        self.token: str | None = None
        self._http = requests.Session()
        self._http.trust_env = False

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs) -> requests.Response:
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or not challenge.startswith("Bearer ") or getattr(response.request,
                                                                                         "_token_retry", False):
            return response
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        query = {"service": params.get("service", "")}
        if "scope" in params:
            query["scope"] = params["scope"]
        auth = (self.username, self.password or "") if self.username is not None else None
        answer = self._http.get(params["realm"], params=query, auth=auth, timeout=30)
        if answer.status_code != 200:
            raise TokenRequestError(answer.status_code, answer.text)
        self.token = answer.json()["token"]
        response.content  # noqa: B018 - drain the 401 so its connection can be reused
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {self.token}"
        retry._token_retry = True  # type: ignore[attr-defined]
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again
