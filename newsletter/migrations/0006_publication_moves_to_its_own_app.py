# Publication now lives in the `publication` app (publication/migrations/0001_initial.py
# took over its table and rows); only newsletter's idea of it goes.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("newsletter", "0005_merge_body_images_and_founding_badges"),
        ("publication", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Publication")],
            database_operations=[],
        ),
    ]
