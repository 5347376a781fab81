"""Fault tests (issue 6): the database and the key backend fail under a running service."""
