from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Readers and money"

    def ready(self) -> None:
        # Connects the email provider's bounce/complaint signal receiver.
        from subscriptions.views import provider_events  # noqa: F401
