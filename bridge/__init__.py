"""faxbridge: an SMTP bridge between email and fax."""

__version__ = "0.1.0"

__all__ = ["__version__"]
