"""Settings, read from the environment or `.env` (pydantic-settings)."""

import ssl
from functools import lru_cache
from typing import Any, Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

_ASYNC_DRIVER = "postgresql+asyncpg"
_POSTGRES_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgresql+pg8000",
}
# Query parameters SQLAlchemy's asyncpg dialect takes as they are.
_ASYNCPG_PARAMETERS = {"host", "port", "ssl", "target_session_attrs", "passfile"}
# libpq query parameters translated by `asyncpg_connect_args`.
_LIBPQ_PARAMETERS = {
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
}
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def async_database_url(raw: str) -> URL:
    """Parse a PostgreSQL URL as people paste it and point it at the asyncpg driver.

    Accepts `postgresql+asyncpg://`, `postgresql://`, `postgres://` and unix-socket URLs
    such as `postgresql://postgres@/app?host=/run/postgresql`, with libpq's common query
    parameters (see `asyncpg_connect_args`). The returned `URL` masks its password in
    `repr()` and `str()`. Raises `ValueError` for anything else, never showing the password.
    """
    _refuse_unescaped_password(raw)
    url = make_url(raw.strip())
    if url.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {url.drivername!r})")
    url = url.set(drivername=_ASYNC_DRIVER)
    asyncpg_connect_args(url)  # refuse unknown query parameters now, not at first connect
    return url


def _refuse_unescaped_password(raw: str) -> None:
    _, _, rest = raw.strip().partition("://")
    userinfo, at, _ = rest.split("?", 1)[0].rpartition("@")
    _, colon, password = userinfo.partition(":")
    if at and colon and any(char in password for char in "@:/"):
        raise ValueError(
            "the password in the database URL contains '@', ':' or '/': URL-escape it "
            "(for example with urllib.parse.quote(password, safe='')): '@' is %40, "
            "':' is %3A, '/' is %2F"
        )


def asyncpg_connect_args(url: URL) -> tuple[URL, dict[str, Any]]:
    """Translate libpq query parameters into asyncpg's connect arguments.

    `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `connect_timeout`, `application_name`
    and `options=-c name=value …` are understood; asyncpg's own `ssl`, `host`, `port`,
    `target_session_attrs` and `passfile` pass through. Anything else is refused with a
    `ValueError` naming the parameter. Returns the URL without the translated parameters.
    """
    query = dict(url.query)
    args: dict[str, Any] = {}
    server_settings: dict[str, str] = {}
    supported = _LIBPQ_PARAMETERS | _ASYNCPG_PARAMETERS
    unknown = sorted(set(query) - supported)
    if unknown:
        raise ValueError(
            f"unsupported database URL parameter {unknown[0]!r}; "
            f"supported: {', '.join(sorted(supported))}"
        )
    if "sslmode" in query or "sslrootcert" in query or "sslcert" in query:
        args["ssl"] = _ssl_argument(
            _single(query, "sslmode") or "prefer",
            _single(query, "sslrootcert"),
            _single(query, "sslcert"),
            _single(query, "sslkey"),
        )
    if "connect_timeout" in query:
        try:
            args["timeout"] = float(_single(query, "connect_timeout") or "")
        except ValueError:
            raise ValueError("database URL parameter 'connect_timeout' must be seconds") from None
    if "application_name" in query:
        server_settings["application_name"] = _single(query, "application_name") or ""
    if "options" in query:
        server_settings.update(_parse_options(_single(query, "options") or ""))
    if server_settings:
        args["server_settings"] = server_settings
    remaining = {name: value for name, value in query.items() if name in _ASYNCPG_PARAMETERS}
    return url.set(query=remaining), args


def asyncpg_dsn(url: URL) -> str:
    """`url` as a DSN for `asyncpg.connect()` itself (outside SQLAlchemy): password included,
    so never log it. asyncpg reads libpq's query parameters from the DSN on its own."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _single(query: dict[str, Any], name: str) -> str | None:
    value = query.get(name)
    if isinstance(value, tuple):
        raise ValueError(f"database URL parameter {name!r} is given more than once")
    return value


def _ssl_argument(
    mode: str, rootcert: str | None, cert: str | None, key: str | None
) -> str | ssl.SSLContext:
    if mode not in _SSL_MODES:
        raise ValueError(f"database URL parameter 'sslmode' must be one of {sorted(_SSL_MODES)}")
    if not (rootcert or cert):
        return mode  # asyncpg understands libpq's mode names
    if mode in {"disable", "allow", "prefer"}:
        raise ValueError("sslrootcert/sslcert need sslmode=require, verify-ca or verify-full")
    context = ssl.create_default_context(cafile=rootcert)
    # libpq: a root certificate with sslmode=require verifies the chain, not the host name.
    context.check_hostname = mode == "verify-full"
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _parse_options(options: str) -> dict[str, str]:
    """libpq's `options`: `-c name=value` (or `--name=value`) pairs, space-separated."""
    settings: dict[str, str] = {}
    words = options.split()
    while words:
        word = words.pop(0)
        if word == "-c" and words:
            word = words.pop(0)
        elif word.startswith(("-c", "--")):
            word = word[2:]
        else:
            raise ValueError("database URL parameter 'options' must be '-c name=value' pairs")
        name, equals, value = word.partition("=")
        if not (name and equals):
            raise ValueError("database URL parameter 'options' must be '-c name=value' pairs")
        settings[name.replace("-", "_")] = value
    return settings


class OptionalSettings(BaseSettings):
    """Every setting that has a default: readable before any database is configured (the
    app reads these when it is built, `migrations/env.py` when it runs)."""

    # hide_input_in_errors: a refused DATABASE_URL is not echoed with its password.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    # Connections per process, all kept open: a request beyond them waits for one (up to
    # DATABASE_POOL_TIMEOUT). Overflow connections are closed as soon as they are returned,
    # so under steady concurrency above the pool size they are opened and closed again and
    # again (a new PostgreSQL backend each time): no overflow by default.
    database_pool_size: int = 10
    database_max_overflow: int = 0
    # Seconds a request waits for a pooled connection before it gets a 503.
    database_pool_timeout: float = 5.0
    # Seconds to establish a connection (a `connect_timeout` in the URL takes precedence).
    database_connect_timeout: float = 5.0
    # Server-side limits in seconds (0 = none): one statement, one lock wait, an idle
    # transaction. A statement also gets a client-side limit one second longer, so a hung
    # server or network cannot hold a request forever.
    database_statement_timeout: float = 15.0
    database_lock_timeout: float = 5.0
    database_idle_in_transaction_timeout: float = 60.0
    # `alembic upgrade` waits at most this long for a lock, so a migration never queues
    # behind a long transaction while all traffic queues behind the migration.
    database_migration_lock_timeout: float = 5.0
    database_echo: bool = False
    # Behind PgBouncer in transaction pooling mode: no named prepared statements reused.
    database_pgbouncer: bool = False
    # Direct connection for Alembic (past PgBouncer); unset: migrations use DATABASE_URL.
    database_migration_url: SecretStr | None = None
    # Streaming replicas of DATABASE_URL's server, a JSON list of URLs: read-only units of
    # work go to one that has caught up with the client (`Database.read_only_unit_of_work`).
    database_replica_urls: list[SecretStr] = []
    # Logging (logs.py): level, json | console | auto (console on a terminal, else json),
    # and the duration from which a statement is logged as slow.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_slow_query_ms: float = 500

    # Larger request bodies are refused with 413 before they are read whole.
    http_max_body_size: int = 1_048_576
    # Seconds a client is told to wait (Retry-After) when the database is unavailable.
    http_retry_after: int = 1
    # How long /health/ready waits for a database round trip before answering 503.
    health_timeout: float = 2.0


class Settings(OptionalSettings):
    # SecretStr: the URL (and its password) never shows up in a repr, a log or a traceback.
    database_url: SecretStr

    @field_validator("database_url")
    @classmethod
    def _parseable(cls, value: SecretStr) -> SecretStr:
        async_database_url(value.get_secret_value())  # refused at startup, password unshown
        return value

    @property
    def database(self) -> URL:
        return async_database_url(self.database_url.get_secret_value())

    @field_validator("database_replica_urls")
    @classmethod
    def _parseable_replicas(cls, value: list[SecretStr]) -> list[SecretStr]:
        for url in value:
            async_database_url(url.get_secret_value())  # refused at startup, password unshown
        return value

    @property
    def replicas(self) -> list[URL]:
        return [async_database_url(url.get_secret_value()) for url in self.database_replica_urls]

    @property
    def migration_database(self) -> URL:
        """Where Alembic connects: `DATABASE_MIGRATION_URL`, else `DATABASE_URL`."""
        raw = self.database_migration_url or self.database_url
        return async_database_url(raw.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    return Settings()
