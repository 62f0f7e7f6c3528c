"""`GET /docs`: Swagger UI over /openapi.json, from a pinned version whose files the browser checks.

FastAPI's own page loads whatever `swagger-ui-dist@5` is current from a CDN, unchecked: a changed
or compromised file would run in the page of anyone holding a token. This page names one
version and carries each file's Subresource Integrity hash (sha384 of the file in that version's
npm package), so the browser refuses anything else.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["SWAGGER_UI_VERSION", "router"]

SWAGGER_UI_VERSION: Final = "5.36.0"
_BASE: Final = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
_JS_SRI: Final = "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+"
_CSS_SRI: Final = "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc"
_PAGE: Final = f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta name="referrer" content="no-referrer">
<title>sccm-refresh API</title>
<link rel="stylesheet" href="{_BASE}/swagger-ui.css" integrity="{_CSS_SRI}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{_BASE}/swagger-ui-bundle.js" integrity="{_JS_SRI}" crossorigin="anonymous"></script>
<script>
SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
</script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return HTMLResponse(_PAGE)
