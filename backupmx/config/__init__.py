"""Configuration in Postfix main.cf syntax: the parameter table, parsing and validation.

    config = load("/etc/backupmx/backupmx.cf")      # raises ConfigError
    config.time("maximal_queue_lifetime")            # seconds
    config.list("smtpd_recipient_restrictions")      # list items
"""

from backupmx.config.issues import ConfigError, ConfigIssue
from backupmx.config.params import PARAMS, Param, describe, render_reference
from backupmx.config.settings import Config, load, parse
from backupmx.config.syntax import split_list
from backupmx.config.values import parse_time

__all__ = [
    "PARAMS",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Param",
    "describe",
    "load",
    "parse",
    "parse_time",
    "render_reference",
    "split_list",
]
