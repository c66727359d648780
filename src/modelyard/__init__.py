"""modelyard: one MLOps system from raw data to a tested, monitored prediction service."""

__version__ = "0.1.0"
