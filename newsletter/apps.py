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
        from django.core import checks as django_checks

        from config import queue
        from newsletter import checks, signals, tasks
        from newsletter.services import reader_data
        from newsletter.services.attribution import article_for_ref
        from subscriptions.services.attribution import register_source_resolver

        del checks, tasks  # registered on import; services queue the tasks by name
        django_checks.register(queue.check_task_names)

        signals.connect()
        # Its parts of a reader's export and erasure (subscriptions/reader_data.py).
        reader_data.register_reader_data_parts()
        # Readers and money know no articles: the refs their forms carry are read here.
        register_source_resolver(article_for_ref)
