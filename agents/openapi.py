"""The API described from the application's own router: ``GET /api/openapi.json`` (OpenAPI 3.1) and
``GET /api/docs`` (a page listing it). Nothing is written twice: every ``/api`` route comes with its methods, its
roles (``x-roles``, from :func:`agents.roles.allow`), its handler's docstring (summary = first sentence) and, for
requests with a body, the JSON schema its module declares in ``REQUEST_SCHEMAS`` (handler name → schema; a
plain object when the module declares none)."""

from __future__ import annotations

import inspect
import json
import re
import sys
from typing import Any, Final

from aiohttp import web

from agents.auth import ROLES
from agents.desk import identity_of
from agents.roles import PUBLIC, allow, route_roles

BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")
_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _summary(doc: str) -> str:
    first = doc.strip().split("\n\n", 1)[0].replace("\n", " ")
    sentence = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    return sentence[:200]


def _operation(method: str, path: str, route: web.AbstractRoute) -> dict[str, Any]:
    handler = route.handler
    name = getattr(handler, "__name__", "handler")
    module_name = getattr(handler, "__module__", "")
    doc = inspect.getdoc(handler) or ""
    roles = route_roles(route)
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{name}",
        "summary": _summary(doc) or f"{method} {path}",
        "tags": [module_name.rsplit(".", 1)[-1]],
        "x-roles": ["public"] if roles is PUBLIC else sorted(roles or ()),
    }
    if doc:
        operation["description"] = doc
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in _PARAM.findall(path)]
    if parameters:
        operation["parameters"] = parameters
    if method in BODY_METHODS:
        schemas = getattr(sys.modules.get(module_name), "REQUEST_SCHEMAS", None) or {}
        schema = schemas.get(name) if isinstance(schemas, dict) else None
        operation["requestBody"] = {"required": method != "DELETE", "content": {
            "application/json": {"schema": schema or {"type": "object"}}}}
    ok = "201" if method == "POST" else "200"
    media = "text/event-stream" if path.endswith("/events") else "application/json"
    operation["responses"] = {ok: {"description": "success", "content": {media: {}}},
                              "401": _ERROR, "403": _ERROR, "422": _ERROR}
    if roles is PUBLIC:
        operation["security"] = []
    return operation


def describe(app: web.Application, *, title: str = "Elder-care call center desktop API") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every ``/api`` route of ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "*") or not (path == "/api" or path.startswith("/api/")):
            continue
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.method, path, route)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1",
                 "description": "JSON over HTTP; a browser session needs X-CSRF-Token on POST/PATCH/DELETE, scripts "
                                "may use HTTP Basic. Errors are {error, field?}. See docs/desktop.md."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "cc_session"},
                                "basic": {"type": "http", "scheme": "basic"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}, "field": {"type": "string"}}}},
        },
        "security": [{"session": []}, {"basic": []}],
    }


@allow(*ROLES)
async def api_openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 description of every API route, with the roles allowed (x-roles)."""
    return web.json_response(describe(request.app))


@allow(*ROLES)
async def api_docs(request: web.Request) -> web.StreamResponse:
    """A page listing the API: methods, paths, roles, summaries and request bodies."""
    from agents.web import _page  # agents.web imports this module: import at call time

    document = describe(request.app)
    rows = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            rows.append({"method": method.upper(), "path": path, "roles": operation["x-roles"],
                         "summary": operation["summary"], "tag": operation["tags"][0],
                         "body": json.dumps(body, ensure_ascii=False, indent=1) if body else ""})
    return _page(request, "api_docs.html", {"rows": rows, "count": len(rows)}, identity=identity_of(request))


def register(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", api_openapi)
    app.router.add_get("/api/docs", api_docs)
