"""Product photos served by the app: only the files a product's payload lists, by position.

A client names a product and a photo number, never a path, so nothing outside the ingested
photos can be read. Photos the shop hosts itself are redirected to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, Response

from api.deps import RuntimeDep
from api.ids import ProductIdPath
from api.schemas import error_responses
from api.views import REMOTE_PREFIXES

router = APIRouter(tags=["images"])
CACHE_SECONDS = 3600


@router.get("/images/{product_id}/{n}", name="product_image", summary="A product's n-th photo",
            response_class=Response, responses={200: {"content": {"image/*": {}}}, **error_responses(404)})
async def product_image(product_id: ProductIdPath, n: Annotated[int, PathParam(ge=0, le=1000)],
                        runtime: RuntimeDep) -> Response:
    files = (await runtime.run(runtime.products.get, product_id)).image_files
    if n >= len(files) or not files[n]:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"product '{product_id}' has no photo {n}")
    source = str(files[n])
    if source.startswith(REMOTE_PREFIXES):
        return RedirectResponse(source, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    if not Path(source).is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"photo {n} of product '{product_id}' is missing on disk")
    return FileResponse(source, headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"})
