"""manage.py ensure_admin: an admin account to sign in with, created once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from subscriptions.services.addresses import InvalidAddress, normalize_email


class Command(BaseCommand):
    help = (
        "Create an admin account if there is none, and print how to sign in. "
        "Running it again changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--email",
            default="admin@example.com",
            help="The admin's own address (marked verified); give a real one in production.",
        )

    def handle(self, *args: Any, username: str, email: str, **options: Any) -> None:
        try:
            email = normalize_email(email)  # the form allauth and the readers' records use
        except InvalidAddress as exc:
            raise CommandError(f"--email: {exc}") from exc
        user_model = get_user_model()
        # On a development machine (DEBUG) the generated password is kept beside the local
        # database (mode 0600) so that `make run` can show it again; change it and the
        # file is simply ignored. In production it is printed once and kept nowhere.
        credentials_file = Path(settings.VAR_DIR) / "admin-credentials.txt"
        remember = settings.DEBUG
        admin_url = f"{settings.SITE_URL}/admin/"

        existing = user_model.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            password = self._remembered_password(credentials_file, existing) if remember else ""
            if password:
                self._print(admin_url, existing.get_username(), password)
            else:
                self.stdout.write(
                    f"An admin account already exists ({existing.get_username()}); "
                    f"sign in at {admin_url} or reset its password with "
                    f"`manage.py changepassword {existing.get_username()}`."
                )
            return

        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            user = user_model.objects.create_superuser(
                username=username, email=email, password=password
            )
            # The operator gave this address: it counts as verified. allauth refuses to set
            # up two-factor while any address of the account is unverified, and with
            # STAFF_MFA_REQUIRED the admin would then never open.
            EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
        if remember:
            credentials_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{username}\n{password}\n")
        self._print(admin_url, username, password)
        if not remember:
            self.stdout.write(
                "  This password is shown once and kept nowhere: sign in and change it "
                f"(`manage.py changepassword {username}`), then set up two-factor sign-in."
            )

    def _remembered_password(self, credentials_file: Path, user: Any) -> str:
        try:
            username, password = credentials_file.read_text().split()[:2]
        except (OSError, ValueError):
            return ""
        if username == user.get_username() and user.check_password(password):
            return password
        return ""

    def _print(self, admin_url: str, username: str, password: str) -> None:
        self.stdout.write(self.style.SUCCESS(f"Admin: {admin_url}"))
        self.stdout.write(f"  username: {username}")
        self.stdout.write(f"  password: {password}")
