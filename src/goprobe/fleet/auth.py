"""Bearer tokens with roles, checked by a server interceptor: an agent token may only connect as an agent,
a client token may only ask (snapshots, listings). Tokens are compared in constant time."""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from goprobe.errors import GoprobeError

AGENT, CLIENT = "agent", "client"
# The methods each role may call
_ALLOWED = {AGENT: {"Connect"}, CLIENT: {"ListAgents", "Snapshot"}}


def read_tokens(path: str | Path) -> dict[str, str]:
    """A tokens file: one ``ROLE TOKEN`` per line (roles: agent, client); # starts a comment."""
    out = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise GoprobeError(f"cannot read the tokens file {path}: {exc.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in _ALLOWED or len(parts[1]) < 16:
            raise GoprobeError(f"{path}:{n}: expected 'agent TOKEN' or 'client TOKEN' (tokens of 16+ characters)")
        out[parts[1]] = parts[0]
    return out


def read_token(path: str | Path) -> str:
    """A client's or agent's own token file: the token alone."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise GoprobeError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise GoprobeError(f"the token file {path} is empty")
    return token


class TokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = tokens

    def _role(self, metadata) -> str | None:
        for key, value in metadata or ():
            if key == "authorization" and value.startswith("Bearer "):
                given = value[len("Bearer "):].encode()
                for token, role in self._tokens.items():
                    if hmac.compare_digest(given, token.encode()):
                        return role
        return None

    def intercept_service(self, continuation, details):
        method = details.method.rsplit("/", 1)[-1]
        role = self._role(details.invocation_metadata)
        if role is None:
            return _deny(details, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")
        if method not in _ALLOWED[role]:
            return _deny(details, grpc.StatusCode.PERMISSION_DENIED, f"a {role} token may not call {method}")
        return continuation(details)


def _deny(details, code, message):
    def abort(_request, context):
        context.abort(code, message)

    if details.method.endswith("/Connect"):
        return grpc.stream_stream_rpc_method_handler(lambda _it, context: abort(None, context))
    return grpc.unary_unary_rpc_method_handler(abort)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)
