"""Password hashing (argon2id) and bearer tokens (HS256 JWT)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from countyread.domain import Role
from countyread.errors import AuthenticationError

_ALGORITHM = "HS256"
# OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): about 0.1 s per login on the
# review center's small servers; the library default (64 MiB, 3 passes, 4 lanes) took
# 0.5 s on two cores. Parameters are stored in each hash, so raising them later is safe.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

#: Verified against when the user does not exist, so a login for an unknown name costs
#: the same time as a wrong password and does not reveal which names exist.
_DUMMY_HASH = _hasher.hash("countyread-timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    role: Role
    expires_at: datetime


def create_token(secret: str, username: str, role: Role, ttl_s: int) -> tuple[str, datetime]:
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    payload = {"sub": username, "role": role.value, "exp": expires, "iat": datetime.now(UTC)}
    return jwt.encode(payload, secret, algorithm=_ALGORITHM), expires


def decode_token(secret: str, token: str) -> TokenClaims:
    try:
        payload = jwt.decode(token, secret, algorithms=[_ALGORITHM],
                             options={"require": ["sub", "exp", "role"]})
        return TokenClaims(
            username=str(payload["sub"]), role=Role(payload["role"]),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("token expired; log in again") from None
    except (jwt.InvalidTokenError, ValueError, KeyError):
        raise AuthenticationError("invalid token") from None
