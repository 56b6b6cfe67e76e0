from django.http import HttpRequest

from newsletter.models import Publication


def publication(request: HttpRequest) -> dict:
    return {"publication": Publication.load()}
