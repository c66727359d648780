"""Request checks shared by task routes: clear 4xx answers before any model work is done."""

from fastapi import HTTPException, Request


def require_json(request: Request) -> None:
    """Refuse bodies that are not declared as JSON with 415, instead of a confusing 422."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            status_code=415,
            detail=f"expected Content-Type: application/json, got {content_type or 'none'!r}",
        )
