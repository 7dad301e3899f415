"""Dependencies of the routes, as ``Annotated`` aliases so route signatures stay short and tests
can override them."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.runtime import Runtime
from api.schemas import FilterParams

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The merchandiser API key.")
_bearer = HTTPBearer(auto_error=False, description="The merchandiser API key as a bearer token.")


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:  # only between start-up failing and the process ending
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the search engine is not started")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_api_key(
    runtime: RuntimeDep,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Writes need the API key: 401 when none is given, 403 when it is wrong."""
    given = api_key or (bearer.credentials if bearer else None)
    if not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "this needs the API key (header X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = runtime.settings.api.api_key.get_secret_value()
    # Constant time, so the key cannot be guessed from how fast a wrong one is refused.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong API key")


# For write routes: `dependencies=[RequireApiKey]`.
RequireApiKey = Depends(require_api_key)


def require_read_access(
    runtime: RuntimeDep,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reads are public unless ``api.public_reads`` is off: then the read key or the write key."""
    settings = runtime.settings.api
    if settings.public_reads:
        return
    given = api_key or (bearer.credentials if bearer else None)
    if not given:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "reads need a key here (header X-API-Key or "
                            "Authorization: Bearer): the read key or the API key", headers={"WWW-Authenticate": "Bearer"})
    keys = [settings.api_key.get_secret_value()] + ([settings.read_key.get_secret_value()] if settings.read_key else [])
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong key")


# For read routes: `dependencies=[RequireReadAccess]`.
RequireReadAccess = Depends(require_read_access)

# Category and price filters from the query string.
FiltersQuery = Annotated[FilterParams, Query()]
