from django.http import HttpResponse, JsonResponse

from .models import Item


def items(request):
    rows = list(
        Item.objects.filter(active=True)
        .order_by("-created")
        .values("id", "name", "sku", "price", "stock", "created")[:20]
    )
    return JsonResponse({"count": len(rows), "items": rows})


def health(request):
    return HttpResponse("ok", content_type="text/plain")
