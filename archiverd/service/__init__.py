"""Running the pipeline as a service: the `Daemon` lifecycle and its wiring, signals, reload,
health and HTTP endpoints, systemd notification, draining, and ``archiverd check``."""
