"""One exception tree for everything scopegate refuses.

    GatewayError                      status, code, detail
    ├── BadPath                       400 bad_path
    ├── BadRequest                    400 bad_request
    ├── InvalidRequest                400 invalid_request   (management API)
    ├── InvalidToken                  401 invalid_token
    │   └── JwtRequired               401 jwt_required
    ├── InsufficientScope             403 insufficient_scope
    ├── TargetDenied                  403 target_denied
    ├── NotFound                      404 not_found
    ├── NoRoute                       404 no_route
    ├── MethodNotAllowed              405 method_not_allowed
    ├── Conflict                      409 conflict
    ├── BodyTooLarge                  413 body_too_large
    ├── RateLimited                   429 rate_limited
    ├── UpstreamUnavailable           502 upstream_unavailable
    ├── StoreUnavailable              503 store_unavailable
    ├── JwksUnavailable               503 jwks_unavailable
    └── UpstreamTimeout               504 upstream_timeout
    ConfigError                       file:line: message (load time, never HTTP)
    StartupError                      one line, exit 1 (a port in use)

Only the web layer turns a GatewayError into a JSON response; only the CLI turns errors into
exit codes.
"""

from __future__ import annotations


class GatewayError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail or self.code.replace("_", " ")

    def headers(self) -> dict[str, str]:
        return {}


class BadPath(GatewayError):
    status, code = 400, "bad_path"


class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class InvalidRequest(GatewayError):
    status, code = 400, "invalid_request"


class InvalidToken(GatewayError):
    status, code = 401, "invalid_token"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="scopegate", error="invalid_token"'}


class JwtRequired(InvalidToken):
    code = "jwt_required"


class InsufficientScope(GatewayError):
    status, code = 403, "insufficient_scope"

    def __init__(self, detail: str = "", scope: str = "") -> None:
        super().__init__(detail)
        self.scope = scope

    def headers(self) -> dict[str, str]:
        value = 'Bearer realm="scopegate", error="insufficient_scope"'
        if self.scope:
            value += f', scope="{self.scope}"'
        return {"WWW-Authenticate": value}


class TargetDenied(GatewayError):
    status, code = 403, "target_denied"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class NoRoute(GatewayError):
    status, code = 404, "no_route"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"

    def __init__(self, detail: str = "", allow: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class Conflict(GatewayError):
    status, code = 409, "conflict"


class BodyTooLarge(GatewayError):
    status, code = 413, "body_too_large"


class ClientGone(GatewayError):
    """The client left while its request body was being read: no answer can reach it. Logged
    with nginx's status for it, 499, and never counted as a failure of ours."""

    status, code = 499, "client_gone"


class RateLimited(GatewayError):
    status, code = 429, "rate_limited"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "60"}


class UpstreamUnavailable(GatewayError):
    status, code = 502, "upstream_unavailable"


class InternalError(GatewayError):
    """A failure of the gateway itself; the response never says more than this."""

    status, code = 500, "internal_error"


class StoreUnavailable(GatewayError):
    status, code = 503, "store_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class JwksUnavailable(GatewayError):
    status, code = 503, "jwks_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class UpstreamTimeout(GatewayError):
    status, code = 504, "upstream_timeout"


class StartupError(Exception):
    """The gateway cannot start (a port in use): one line for the operator, exit 1."""


class ConfigError(Exception):
    """A problem in a config or surface file, reported as `file:line: message`."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class Problem:
    __slots__ = ("file", "line", "message")

    def __init__(self, file: str, line: int, message: str) -> None:
        self.file, self.line, self.message = file, line, message

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"
