"""The API's one error shape, `{"type", "errors": [{"code", "detail", "attr"}]}`, built
without Django: gunicorn's master (voicecalls.gunicorn_errors) and the ASGI wrapper
(voicecalls.middleware) answer with it before Django is set up."""

from __future__ import annotations


def error_body(error_type: str, code: str, detail: str, attr: str | None = None) -> dict:
    """One error in the shape every answer of the API has."""
    return {"type": error_type, "errors": [{"code": code, "detail": detail, "attr": attr}]}
