from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.static import serve

from subscriptions.views.provider_events import provider_webhook_urlpatterns

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    # The email provider's tracking webhooks (bounces, complaints), e.g.
    # /anymail/postmark/tracking/: 404 unless a provider and its secret are configured.
    path("anymail/", include(provider_webhook_urlpatterns())),
    path("", include("subscriptions.urls")),
    path("", include("newsletter.urls")),
]

if settings.SERVE_MEDIA:
    # Uploaded covers and logos. In production a front proxy or object storage may
    # serve /media/ instead (SERVE_MEDIA=false).
    urlpatterns.append(
        re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT})
    )

handler404 = "newsletter.views.site.page_not_found"
handler500 = "newsletter.views.site.server_error"
