from django.urls import path

from newsletter.views import site

app_name = "newsletter"

urlpatterns = [
    path("", site.home, name="home"),
    path("healthz", site.healthz, name="healthz"),
]
