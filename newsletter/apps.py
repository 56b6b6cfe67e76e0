from django.apps import AppConfig


class NewsletterConfig(AppConfig):
    name = "newsletter"
    verbose_name = "Publishing"

    def ready(self) -> None:
        from newsletter import signals

        signals.connect()
