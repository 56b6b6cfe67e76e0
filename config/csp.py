"""The Content-Security-Policy of every page (django-csp), and the admin's exception.

Reader pages run no script at all and load styles, fonts and scripts only from this
site, so an injected `<script>` or inline handler would not run even if one got past
the sanitisers. The admin needs inline script: django-prose-editor's import map and
the send-progress page. There `script-src` and `style-src` also allow 'unsafe-inline';
everything else (no plugins, no framing, no foreign form targets or connections)
stays as strict as on reader pages.
"""

from __future__ import annotations

from csp.constants import UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from django.http import HttpRequest, HttpResponseBase

ADMIN_PREFIX = "/admin/"


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
