"""What serves the API server: the Flask app and its views, the gunicorn runner and worker,
health, metrics, logs, settings, recording, the namespace cache, certificates.

Built on the core (``webhook``); never imported by it.
"""
