from django.urls import path

from subscriptions.views import (
    account,
    billing,
    donate,
    gifts,
    groups,
    signup,
    unsubscribe,
    webhooks,
)

app_name = "subscriptions"

urlpatterns: list = [
    path("subscribe/", signup.subscribe_view, name="subscribe"),
    path("subscribe/confirm/<str:token>/", signup.confirm_view, name="confirm"),
    path("unsubscribe/<str:token>/", unsubscribe.unsubscribe_view, name="unsubscribe"),
    path("account/", account.account_view, name="account"),
    path("account/newsletter/", account.newsletter_view, name="account_newsletter"),
    path("account/tracking/", account.tracking_view, name="account_tracking"),
    path("account/export/", account.export_view, name="account_export"),
    path("account/delete/", account.delete_view, name="account_delete"),
    # Paid plans, billing, donations and Stripe's webhook.
    path("upgrade/", billing.upgrade_view, name="upgrade"),
    path("upgrade/success/", billing.upgrade_success_view, name="upgrade_success"),
    path("account/billing/", billing.billing_view, name="billing"),
    path("donate/", donate.donate_view, name="donate"),
    path("donate/thanks/", donate.donate_thanks_view, name="donate_thanks"),
    path("gift/", gifts.gift_view, name="gift"),
    path("gift/thanks/", gifts.gift_thanks_view, name="gift_thanks"),
    path("gift/redeem/<str:token>/", gifts.redeem_view, name="gift_redeem"),
    path("account/group/", groups.group_view, name="group"),
    path("account/group/join/<str:token>/", groups.join_view, name="group_join"),
    path("stripe/webhook/", webhooks.stripe_webhook, name="stripe_webhook"),
]
