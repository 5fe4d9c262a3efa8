from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus exposition (needs a key like every route: set ``authorization`` in the scrape config)."""
    return Response(request.app.state.manager.metrics.render(), media_type=CONTENT_TYPE_LATEST)
