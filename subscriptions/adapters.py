"""django-allauth customisation, in one place."""

from allauth.account.adapter import DefaultAccountAdapter


class ReaderAccountAdapter(DefaultAccountAdapter):
    pass
