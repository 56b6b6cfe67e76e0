from django.contrib.sitemaps.views import sitemap
from django.urls import path

from newsletter.feeds import LatestArticlesFeed
from newsletter.services.page_cache import cache_anonymous_page
from newsletter.sitemaps import SITEMAPS
from newsletter.views import comments, site

app_name = "newsletter"

urlpatterns = [
    path("", site.home, name="home"),
    path("p/<slug:slug>/", site.article, name="article"),
    path("p/<slug:slug>/comments/", comments.thread, name="comments"),
    path("comments/<int:pk>/edit/", comments.edit, name="comment_edit"),
    path("comments/<int:pk>/delete/", comments.delete, name="comment_delete"),
    path("account/name/", comments.display_name, name="display_name"),
    path("s/<slug:slug>/", site.section, name="section"),
    path("authors/<slug:slug>/", site.author, name="author"),
    # The feed and the sitemap show only what anonymous readers may see: cached as pages.
    path("feed/", cache_anonymous_page()(LatestArticlesFeed()), name="feed"),
    path(
        "sitemap.xml",
        cache_anonymous_page(reads=("p",))(sitemap),
        {"sitemaps": SITEMAPS},
        name="sitemap",
    ),
    path("robots.txt", site.robots_txt, name="robots"),
    path("favicon.ico", site.favicon, name="favicon"),
    path("healthz", site.healthz, name="healthz"),
]
