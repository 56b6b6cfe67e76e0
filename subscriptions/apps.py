from django.apps import AppConfig
from django.core import checks


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Readers and money"

    def ready(self) -> None:
        from config import queue
        from subscriptions import signals, stripe_client, tasks
        from subscriptions.services import accounts, plans

        # Connects the email provider's bounce/complaint signal receiver.
        from subscriptions.views import provider_events

        del tasks  # registered on import; services queue the tasks by name
        checks.register(queue.check_task_names)
        # Stripe's keys must come together: a misconfiguration fails at start.
        checks.register(stripe_client.check_settings, checks.Tags.security)
        checks.register(provider_events.check_settings, checks.Tags.security)
        # Stripe on and nothing to buy: said at migrate time and on the Plans list.
        checks.register(plans.check_offer, checks.Tags.database)
        # A write to a membership, plan, subscriber or user renews the readers' records.
        signals.connect()
        # Its parts of a reader's export and erasure (subscriptions/reader_data.py).
        accounts.register_reader_data_parts()
