"""Fakes of the outside world for tests: SMTP sinks and the like."""
