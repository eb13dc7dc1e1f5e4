from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    sku = models.CharField(max_length=32, unique=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField()
    active = models.BooleanField(default=True)
    created = models.DateTimeField()

    class Meta:
        app_label = "hop_django"
        indexes = [models.Index(fields=["active", "-created"])]
