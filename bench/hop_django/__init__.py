"""A tiny Django project for bench/hop_bench.py: one model, one view doing a
small ORM read on SQLite (the database file is named by $HOP_DJANGO_DB; the
script creates it with `python -m hop_django.setup_db` before the load and
only reads it during the load).

    GET /items    the 20 newest active items as JSON (one SELECT)
    GET /health   readiness
"""
