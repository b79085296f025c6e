"""The schema documents every status the API answers: besides each view's own answers
(``@extend_schema``), the generic ones DRF gives before or around a view, added to every
operation where they can occur. Each is JSON ``{"detail": "..."}`` (the ``Error`` schema).

- 400 malformed JSON, 415 a body that is not JSON: operations with a request body.
- 401: views with token authentication (no, wrong or inactive credentials).
- 403: unsafe methods with session authentication (CSRF), besides the views' own 403s.
- 406: every operation (an ``Accept`` header or ``?format=`` nothing renders).
- 429: throttled views, with ``Retry-After``.

Not operations, so not in the schema: 405 for a method a path lacks (with ``Allow``),
OPTIONS and HEAD."""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from rest_framework import throttling
from rest_framework.authentication import SessionAuthentication

from config.errors import ErrorSerializer
from config.openapi_examples import BODY_EXAMPLES, PARAMETER_EXAMPLES

MALFORMED_BODY = 'A body that is not valid JSON, or is too large: `{"detail": "..."}`.'
UNAUTHENTICATED = "No or invalid credentials: send `Authorization: Token <token>` or a session."
CSRF_FAILED = "A session-authenticated request without its CSRF token (`X-CSRFToken` header)."
NOT_ACCEPTABLE = "The `Accept` header or `?format=` names nothing the API renders; ask for JSON."
UNSUPPORTED_MEDIA_TYPE = "The body is not `application/json`: the API accepts JSON only."
THROTTLED = "Too many requests: `Retry-After` says how many seconds to wait."
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Where a view documents these itself it means its own reasons (invalid fields; not staff):
# the generic reason is added to its description. The others mean the same either way.
ALSO_FOR_OTHER_REASONS = {"400", "403"}


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:  # excluded from the schema
            return None
        responses = operation["responses"]
        for code, description in self._generic_answers(has_body="requestBody" in operation):
            if code in responses and code in ALSO_FOR_OTHER_REASONS:
                # The view documents this status for its own reasons; say that this is one more.
                own = responses[code]["description"].rstrip(".")
                responses[code]["description"] = f"{own}; or {description[0].lower()}{description[1:]}"
            elif code not in responses:
                responses[code] = self._error_response(description)
        if "429" in responses:
            responses["429"].setdefault("headers", {})["Retry-After"] = {
                "schema": {"type": "integer"},
                "description": "Seconds until the next request is allowed.",
            }
        operation["responses"] = dict(sorted(responses.items()))
        self._add_examples(operation)
        return operation

    def _add_examples(self, operation: dict[str, Any]) -> None:
        """Swagger UI's "Try it out" starts from these (config.openapi_examples)."""
        for parameter in operation.get("parameters", []):
            if parameter["name"] in PARAMETER_EXAMPLES and "example" not in parameter:
                parameter["example"] = PARAMETER_EXAMPLES[parameter["name"]]
        for media in operation.get("requestBody", {}).get("content", {}).values():
            component = media.get("schema", {}).get("$ref", "").rpartition("/")[2]
            if component in BODY_EXAMPLES and "examples" not in media:
                summary, value = BODY_EXAMPLES[component]
                media["examples"] = {component: {"value": value, "summary": summary}}

    def _generic_answers(self, *, has_body: bool) -> list[tuple[str, str]]:
        view = self.view
        authenticators = view.get_authenticators()
        answers = []
        if has_body:
            answers.append(("400", MALFORMED_BODY))
        # DRF answers 401 when an authenticator names a WWW-Authenticate scheme (the token);
        # a session alone gets 403.
        if any(auth.authenticate_header(view.request) for auth in authenticators):
            answers.append(("401", UNAUTHENTICATED))
        sessions = any(isinstance(auth, SessionAuthentication) for auth in authenticators)
        if sessions and self.method in UNSAFE_METHODS:
            answers.append(("403", CSRF_FAILED))
        answers.append(("406", NOT_ACCEPTABLE))
        if has_body:
            answers.append(("415", UNSUPPORTED_MEDIA_TYPE))
        if self._is_throttled():
            answers.append(("429", THROTTLED))
        return answers

    def _is_throttled(self) -> bool:
        # A scoped throttle counts only the views that name a scope.
        return any(
            not isinstance(throttle, throttling.ScopedRateThrottle)
            or getattr(self.view, "throttle_scope", None)
            for throttle in self.view.get_throttles()
        )

    def _error_response(self, description: str) -> dict[str, Any]:
        schema = self.resolve_serializer(ErrorSerializer, "response").ref
        return {"content": {"application/json": {"schema": schema}}, "description": description}
