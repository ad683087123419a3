"""The OpenAPI 3.1 document of the ingest endpoint, served at `GET /openapi.json`.

Built from the settings, so the documented limits (body size, tolerance) are the ones in force.
"""

from __future__ import annotations

from typing import Any

from ingest import answers
from pipeline.settings import IngestSettings


def _error_response(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}


def document(settings: IngestSettings, webhook_path: str) -> dict[str, Any]:
    """The OpenAPI document for `webhook_path` and the operational endpoints."""
    webhook = {
        "post": {
            "operationId": "receiveWherebyWebhook",
            "summary": "Receive one Whereby webhook event",
            "description": (
                "Checks, in order: method (405), Content-Type application/json and no Content-Encoding but "
                f"identity (415), body size up to {settings.webhook_max_bytes} bytes (413), the whole body within "
                f"{settings.webhook_body_timeout_s:g}s (408), Whereby-Signature (401), envelope (400; the signed "
                "body also goes to the dead-letter topic). Answers 202 only after the broker acknowledged the "
                "record on the raw topic; 503 with Retry-After when it could not be stored in time."
            ),
            "parameters": [
                {
                    "name": "Whereby-Signature",
                    "in": "header",
                    "required": True,
                    "description": (
                        "`t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>`; several v1 values allowed; "
                        f"t within ±{settings.webhook_tolerance_s}s of the receiver's clock."
                    ),
                    "schema": {"type": "string", "pattern": r"^t=\d+(,v1=[0-9a-f]{64})+$"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {answers.JSON_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Envelope"}}},
            },
            "responses": {
                "202": {
                    "description": "Stored on the raw topic (acknowledged by all in-sync replicas)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
                },
                "400": _error_response("Signed, but not a usable envelope; `field` names the field at fault"),
                "401": _error_response("Signature missing, malformed, outside the time tolerance, or not matching"),
                "405": _error_response(
                    "Method other than POST",
                    headers={"Allow": {"description": "Always POST", "schema": {"type": "string"}}},
                ),
                "408": _error_response(f"Body not complete within {settings.webhook_body_timeout_s:g}s of the headers"),
                "413": _error_response(f"Body larger than {settings.webhook_max_bytes} bytes"),
                "415": _error_response("Content-Type is not application/json, or Content-Encoding is not identity"),
                "503": _error_response(
                    "Not stored (broker unavailable, saturated, shutting down or too many open connections)",
                    headers=_RETRY_AFTER,
                ),
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Whereby webhook ingest",
            "version": "1",
            "description": "Receives Whereby webhooks and makes them durable on Kafka before answering.",
        },
        "paths": {
            webhook_path: webhook,
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The process is alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: the producer can reach the broker",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        },
        "components": {
            "schemas": {
                "Envelope": {
                    "type": "object",
                    "required": ["id", "type", "createdAt", "data"],
                    "properties": {
                        "id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "apiVersion": {"type": "string"},
                        "type": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 256,
                            "description": "Unknown types are accepted and forwarded",
                        },
                        "createdAt": {"type": "string", "format": "date-time"},
                        "data": {"type": "object"},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": ["status", "id"],
                    "properties": {"status": {"const": "accepted"}, "id": {"type": "string"}},
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string"},
                        "detail": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
            }
        },
    }
