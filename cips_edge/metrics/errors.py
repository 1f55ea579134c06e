"""The one error type that metrics code raises for problems a user causes; its message is one line."""


class MetricsError(ValueError):
    """Bad data path, unusable images, missing or wrong weights, an impossible request."""
