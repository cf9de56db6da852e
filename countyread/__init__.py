"""CountyRead core: settings, domain types, database, file store and job queue."""

__all__ = ["__version__"]

__version__ = "0.1.0"
