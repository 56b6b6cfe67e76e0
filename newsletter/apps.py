from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class EditorsAdminConfig(admin_apps.AdminConfig):
    """Django's admin with the editors' site: throttled sign-in, two-factor codes."""

    default = False
    default_site = "newsletter.admin_site.StaffAdminSite"


class NewsletterConfig(AppConfig):
    default = True  # the module also holds the admin's config
    name = "newsletter"
    verbose_name = "Publishing"

    def ready(self) -> None:
        from newsletter import checks, signals
        from newsletter.services.attribution import article_for_ref
        from subscriptions.services.attribution import register_source_resolver

        del checks  # registered on import

        signals.connect()
        # Readers and money know no articles: the refs their forms carry are read here.
        register_source_resolver(article_for_ref)
