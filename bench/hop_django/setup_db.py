"""Create the bench database ($HOP_DJANGO_DB): migrate, then 200 items.

    HOP_DJANGO_DB=/tmp/x.sqlite3 python -m hop_django.setup_db   (cwd bench/)
"""
import datetime as dt
import os
from decimal import Decimal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hop_django.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from hop_django.models import Item  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)
Item.objects.all().delete()
t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
Item.objects.bulk_create(
    Item(name=f"Item {i}", sku=f"SKU-{i:06d}", price=Decimal(i * 7 % 1000) + Decimal("0.99"),
         stock=i * 3 % 50, active=i % 5 != 0, created=t0 + dt.timedelta(minutes=i))
    for i in range(200)
)
print(Item.objects.count())
