"""The Celery shell around the newsletter library: one app, thin tasks."""
