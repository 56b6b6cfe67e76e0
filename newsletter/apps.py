from django.apps import AppConfig


class NewsletterConfig(AppConfig):
    name = "newsletter"
    verbose_name = "Publishing"

    def ready(self) -> None:
        from newsletter import checks, signals

        del checks  # registered on import

        signals.connect()
