"""The HTTP API (Falcon), served by gunicorn."""
