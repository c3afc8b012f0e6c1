"""An agent's key pair and what it does with it at the IdP: private_key_jwt client assertions (RFC 7523),
client_credentials grants and token introspection. Shared by connector and integration tests."""

from __future__ import annotations

import time
import uuid

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.idp_server import IdPProcess


class Agent:
    """An agent's key pair and the private_key_jwt client assertions it signs (RFC 7523)."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", auto_kid=True)

    @property
    def jwks(self) -> dict:
        return {"keys": [{**self.key.as_dict(private=False), "alg": "ES256", "use": "sig"}]}

    def assertion(self, client_id: str, audience: str) -> str:
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 60}
        claims["jti"] = uuid.uuid4().hex
        return jwt.encode({"alg": "ES256", "kid": self.key.kid}, claims, self.key)

    def client_auth(self, client_id: str, audience: str) -> dict[str, str]:
        return {
            "client_id": client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(client_id, audience),
        }

    def client_credentials(self, idp: IdPProcess, client_id: str, scope: str) -> httpx.Response:
        data = {"grant_type": "client_credentials", "scope": scope, **self.client_auth(client_id, idp.issuer)}
        return httpx.post(idp.token_endpoint, data=data, timeout=10)

    def introspect(self, idp: IdPProcess, client_id: str, token: str) -> dict:
        """Introspect ``token`` authenticating as ``client_id`` (a resource server's own client)."""
        data = {"token": token, **self.client_auth(client_id, idp.issuer)}
        response = httpx.post(idp.introspection_endpoint, data=data, timeout=10)
        response.raise_for_status()
        return response.json()
