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
        from newsletter.services import reader_data

        del checks  # registered on import

        signals.connect()
        # Its parts of a reader's export and erasure (subscriptions/reader_data.py).
        reader_data.register_reader_data_parts()
