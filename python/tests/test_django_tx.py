"""curfew.django.enqueue: the job exists if and only if the transaction
commits. SQLite: sent from transaction.on_commit. PostgreSQL (curfew's store
in the same database): inserted by the curfew.enqueue() SQL function inside
the transaction."""


import pytest

django = pytest.importorskip("django")

from conftest import APP_COMMANDS, PG_URL, Curfew, require_pg  # noqa: E402


@pytest.fixture(scope="module")
def dj(tmp_path_factory):
    from django.conf import settings

    if not settings.configured:
        db = tmp_path_factory.mktemp("django") / "app.sqlite3"
        user_host = PG_URL.split("://", 1)[1]
        user, _, rest = user_host.partition("@")
        hostport, _, name = rest.partition("/")
        host, _, port = hostport.partition(":")
        settings.configure(
            DATABASES={
                "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)},
                "pg": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": name,
                    "USER": user,
                    "HOST": host,
                    "PORT": port or "5432",
                },
            },
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    return settings


def create_table(connection):
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS signup (email varchar(200))")


def signup(alias, email, *, fail=False, **job):
    """Inserts a row and enqueues its job in one transaction."""
    import curfew.django
    from django.db import connections, transaction

    result = {}
    try:
        with transaction.atomic(using=alias):
            with connections[alias].cursor() as cur:
                cur.execute("INSERT INTO signup (email) VALUES (%s)", [email])
            result["job"] = curfew.django.enqueue("ok", {"email": email}, using=alias, **job)
            if fail:
                raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    return result["job"]


@pytest.fixture(scope="module")
def sqlite_curfew(tmp_path_factory):
    c = Curfew(tmp_path_factory.mktemp("django-sqlite"), APP_COMMANDS["fastapi"])
    yield c
    c.stop()


def test_sqlite_on_commit(dj, sqlite_curfew, monkeypatch):
    import curfew
    from django.db import connections

    c = sqlite_curfew
    monkeypatch.setenv("CURFEW_ADMIN_URL", c.admin_url)
    monkeypatch.setattr(curfew._client, "_default", None)
    create_table(connections["default"])

    before = c.client.enqueue("ok", {"marker": 1}).id
    assert signup("default", "gone@x", fail=True) is None
    assert signup("default", "kept@x") is None  # sent at commit
    c.wait_job(before + 1, lambda j: j["state"] == "succeeded")
    emails = [r["payload"]["email"] for r in c.runs("ok") if "email" in r["payload"]]
    assert emails == ["kept@x"]
    assert c.client.job(before + 1)["payload"] == {"email": "kept@x"}

    # Outside a transaction it is sent at once and returned.
    import curfew.django

    job = curfew.django.enqueue("ok", {"email": "now@x"})
    assert job is not None and job.created


@pytest.fixture(scope="module")
def pg_curfew(tmp_path_factory):
    require_pg()
    c = Curfew(tmp_path_factory.mktemp("django-pg"), APP_COMMANDS["fastapi"], store="postgres")
    yield c
    c.stop()


def test_postgres_sql_function_in_the_transaction(dj, pg_curfew, monkeypatch):
    import curfew
    import curfew.django
    from django.db import connections

    c = pg_curfew
    monkeypatch.setattr(dj, "CURFEW_PG_SCHEMA", c.schema, raising=False)
    monkeypatch.setattr(curfew.django, "_has_function", {})
    # Not through the API: with no address at all, on_commit could not send.
    monkeypatch.delenv("CURFEW_ADMIN_URL", raising=False)
    monkeypatch.delenv("CURFEW_CONTROL_SOCKET", raising=False)
    monkeypatch.setattr(curfew._client, "_default", None)
    create_table(connections["pg"])

    gone = signup("pg", "gone@pg", fail=True)
    kept = signup("pg", "kept@pg", priority=3, idempotency_key=f"signup-{c.schema}")
    assert kept.created is None and kept.queue == "default"
    stored = c.wait_job(kept.id, lambda j: j["state"] == "succeeded")
    assert stored["payload"] == {"email": "kept@pg"} and stored["priority"] == 3
    with pytest.raises(curfew.RequestError):
        c.client.job(gone.id)  # rolled back with the row: never existed
    # The same key again inside another transaction: the same job.
    assert signup("pg", "kept@pg", idempotency_key=f"signup-{c.schema}").id == kept.id
    # The row and the job, together.
    with connections["pg"].cursor() as cur:
        cur.execute("SELECT count(*) FROM signup WHERE email = 'gone@pg'")
        assert cur.fetchone()[0] == 0
    # A unique key through the SQL function: the holder comes back.
    from django.db import transaction

    with transaction.atomic(using="pg"):
        first = curfew.django.enqueue("ok", {}, unique_key=f"u-{c.schema}", unique_scope="10m", delay=3600, using="pg")
        again = curfew.django.enqueue("ok", {}, unique_key=f"u-{c.schema}", unique_scope="10m", using="pg")
    assert again.id == first.id
    assert c.client.job(first.id)["unique_scope"] == "window"


def test_sql_mode_needs_postgres(dj, monkeypatch):
    import curfew.django

    monkeypatch.setattr(dj, "CURFEW_TRANSACTIONAL_ENQUEUE", "sql", raising=False)
    with pytest.raises(ValueError, match="PostgreSQL"):
        curfew.django.enqueue("ok", using="default")


