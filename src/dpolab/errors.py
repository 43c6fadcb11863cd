"""Errors raised before any expensive work starts."""


class ConfigError(ValueError):
    """A study config is wrong; the message starts with the offending key's dotted path."""
