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

        del checks  # registered on import

        signals.connect()
