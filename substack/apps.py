from django.apps import AppConfig


class SubstackConfig(AppConfig):
    name = "substack"
    verbose_name = "Substack import"
