"""kabigate as a service: Celery workers on RabbitMQ ingest and gate into a shared store, and a
listener turns build events (fedora-messaging) into tasks.

config   the service's settings: a TOML file and the environment
work     what a task is asked (ingest a kernel, ingest drivers, gate a kernel), its idempotency key
events   build events (Koji's, kabigate's own) turned into requests
koji     a Koji kmod build's RPMs, asked of Koji's XML-RPC hub
app      the Celery app, its tasks, and enqueueing; gating: the gate task
messaging fedora-messaging's configuration, and publishing gate results
listener `kabigate listen`: the fedora-messaging consumer
"""
