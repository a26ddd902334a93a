"""The web dashboard and REST API over the store (`kabigate serve`): an edge like the CLI, calling
the services and the Store only."""

from kabigate.web.app import create_app

__all__ = ["create_app"]
