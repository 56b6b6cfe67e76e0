"""The Content-Security-Policy of every page (django-csp), and the admin's exception.

Reader pages run no script at all and load styles, fonts and scripts only from this
site, so an injected `<script>` or inline handler would not run even if one got past
the sanitisers. The admin needs inline script: django-prose-editor's import map and
the send-progress page. There `script-src` and `style-src` also allow 'unsafe-inline';
everything else (no plugins, no framing, no foreign form targets or connections)
stays as strict as on reader pages.

django-csp builds the header from the settings on every response (a few dozen
microseconds, a tenth of what a signed-in page shown from its shell costs besides).
The policy of a page is one of a handful (reader pages, the admin, a view's own
`csp_update`), so each distinct one is built once and kept; a policy with a nonce in
it (a page that asked for `request.csp_nonce`) is built for its request, since the
nonce is that request's alone. A change of the settings (a test's) forgets them.
"""

from __future__ import annotations

import http.client
from typing import Any

from csp.constants import HEADER, HEADER_REPORT_ONLY, UNSAFE_INLINE
from csp.middleware import CheckableLazyObject, CSPMiddleware, PolicyParts
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponseBase

ADMIN_PREFIX = "/admin/"
# Distinct policies kept; past this (a view building policies from its input), built
# every time rather than kept without bound.
_MOST_POLICIES = 64
_built: dict[tuple[bool, str], str] = {}


def _forget_policies(**kwargs: Any) -> None:
    _built.clear()


setting_changed.connect(_forget_policies)


def _policy(parts: PolicyParts, *, report_only: bool) -> str:
    def build() -> str:
        return build_policy(
            config=parts.config,
            update=parts.update,
            replace=parts.replace,
            nonce=parts.nonce,
            report_only=report_only,
        )

    if parts.nonce is not None:
        return build()
    key = (report_only, repr((parts.config, parts.update, parts.replace)))
    policy = _built.get(key)
    if policy is None:
        policy = build()
        if len(_built) < _MOST_POLICIES:
            _built[key] = policy
    return policy


class SiteCSPMiddleware(CSPMiddleware):
    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if request.path_info.startswith(ADMIN_PREFIX):
            parts.update = {
                **(parts.update or {}),
                "script-src": [UNSAFE_INLINE],
                "style-src": [UNSAFE_INLINE],
            }
        return parts

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """django-csp's own, with each distinct policy built once (`_policy`)."""
        exempted_debug_codes = (http.client.INTERNAL_SERVER_ERROR, http.client.NOT_FOUND)
        if response.status_code in exempted_debug_codes and settings.DEBUG:
            return response
        for report_only, header, exempt, setting in (
            (False, HEADER, "_csp_exempt", "CONTENT_SECURITY_POLICY"),
            (True, HEADER_REPORT_ONLY, "_csp_exempt_ro", "CONTENT_SECURITY_POLICY_REPORT_ONLY"),
        ):
            parts = self.get_policy_parts(
                request=request, response=response, report_only=report_only
            )
            policy = _policy(parts, report_only=report_only)
            if not policy or header in response or getattr(response, exempt, False) is not False:
                continue
            prefixes = (getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES") or ()
            if not request.path_info.startswith(tuple(prefixes)):
                response[header] = policy
        # As django-csp: a nonce asked for after the header is written would not be in it.
        if getattr(request, "_csp_nonce", None) is None:
            request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
