from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(prefix="/v2/health", tags=["health"])


@router.get("/live")
def live() -> dict[str, bool]:
    """Liveness: the process answers. Needs no credentials."""
    return {"live": True}


@router.get("/ready", response_model=None)
def ready(request: Request) -> JSONResponse:
    """Readiness: migrations applied and every deployment loaded (or failed). 503 until then."""
    ok = bool(getattr(request.app.state, "ready", False)) and request.app.state.manager.ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)
