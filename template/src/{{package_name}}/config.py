"""Settings, read from the environment or `.env` (pydantic-settings)."""

from functools import lru_cache
from typing import Literal

from pydantic import SecretStr
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


def async_database_url(raw: str) -> URL:
    """Parse a PostgreSQL URL as people paste it and point it at the asyncpg driver.

    Accepts `postgresql+asyncpg://`, `postgresql://`, `postgres://` and unix-socket URLs
    such as `postgresql://postgres@/app?host=/run/postgresql`. The returned `URL`
    masks its password in `repr()` and `str()`.
    """
    url = make_url(raw.strip())
    if url.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {url.drivername!r})")
    return url.set(drivername=_ASYNC_DRIVER)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # SecretStr: the URL (and its password) never shows up in a repr, a log or a traceback.
    database_url: SecretStr
    database_pool_size: int = 5
    database_max_overflow: int = 10
    database_echo: bool = False
    # Behind PgBouncer in transaction pooling mode: no named prepared statements reused.
    database_pgbouncer: bool = False
    # Logging (logs.py): level, json | console | auto (console on a terminal, else json),
    # and the duration from which a statement is logged as slow.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_slow_query_ms: float = 500

    @property
    def database(self) -> URL:
        return async_database_url(self.database_url.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    return Settings()
