# The Publication model moves here from `newsletter` with its rows: the state is
# created over the existing table, which keeps its name (newsletter_publication, see
# the model's Meta: processes still running the code from before the move read it
# until they restart), and its content type (with the admin permissions that point at
# it) is relabelled rather than recreated.
# newsletter/migrations/0006_publication_moves_to_its_own_app.py drops it from
# newsletter's state without touching the table.

import publication.validators
from django.db import migrations, models


def relabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.using(schema_editor.connection.alias).filter(
        app_label="newsletter", model="publication"
    ).update(app_label="publication")


def unrelabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.using(schema_editor.connection.alias).filter(
        app_label="publication", model="publication"
    ).update(app_label="newsletter")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("newsletter", "0005_merge_body_images_and_founding_badges"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Publication",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(default="Broadside", max_length=200)),
                        ("tagline", models.CharField(blank=True, max_length=300)),
                        ("description", models.TextField(blank=True)),
                        ("logo", models.ImageField(blank=True, upload_to="publication/", validators=[publication.validators.validate_image_upload])),
                        ("sender_name", models.CharField(blank=True, max_length=200)),
                        ("sender_email", models.EmailField(blank=True, max_length=254)),
                        ("reply_to_email", models.EmailField(blank=True, max_length=254)),
                        ("kofi_url", models.URLField(blank=True, verbose_name="Ko-fi link")),
                        ("buymeacoffee_url", models.URLField(blank=True, verbose_name="Buy Me a Coffee link")),
                        ("telegram_channel_url", models.URLField(blank=True, verbose_name="Telegram channel link")),
                        ("footer_text", models.TextField(blank=True, help_text="Shown in the site and email footer (e.g. a postal address).")),
                        ("comment_policy", models.CharField(choices=[("signed_in", "Everyone signed in"), ("paid", "Paid readers only")], default="signed_in", max_length=20)),
                        ("comment_digest_enabled", models.BooleanField(default=False, help_text="Each article's authors get one email an hour listing its new comments.", verbose_name="email authors a digest of new comments")),
                        ("show_founding_badges", models.BooleanField(default=False, help_text="Comments by readers on a founding plan carry a 'Founding member' badge.", verbose_name="mark founding members' comments")),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "newsletter_publication",
                        "constraints": [models.CheckConstraint(condition=models.Q(("pk", 1)), name="publication_singleton")],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel_content_type, unrelabel_content_type),
    ]
