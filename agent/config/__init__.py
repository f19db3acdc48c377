"""Configuration: a TOML file, overridden by ``HYPERTAIL_<SECTION>__<KEY>`` environment variables.

:mod:`agent.config.settings` is the shape (one model per section), :mod:`agent.config.load`
reads a file and the environment into it. Import from here: ``from agent.config import
Settings, load_settings``.
"""

from agent.config.load import effective_config, load_settings, mask_dsn
from agent.config.settings import (
    CONFIG_ENV,
    ENV_PREFIX,
    SSL_MODES,
    AgentSettings,
    BatchSettings,
    DatabaseSettings,
    HttpSettings,
    OpsSettings,
    SchemaSettings,
    Settings,
    SourceSettings,
    TailSettings,
)

__all__ = [
    "CONFIG_ENV", "ENV_PREFIX", "SSL_MODES", "AgentSettings", "BatchSettings", "DatabaseSettings", "HttpSettings",
    "OpsSettings", "SchemaSettings", "Settings", "SourceSettings", "TailSettings", "effective_config",
    "load_settings", "mask_dsn",
]
