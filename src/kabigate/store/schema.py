"""The store's tables (SQLAlchemy Core). Alembic migrations create and change them; this module
is what the code queries and what tests compare the migrated database with.

Layout, and why:
- Kernels share almost all of their ~25,000 exports, so an export fact (symbol, CRC, type,
  namespace, owner) is stored once in `export`, and a kernel points at an `export_set`: the sorted
  ids of its exports, delta-encoded and compressed (~30 KB instead of 25,000 rows per kernel).
- Modules are content-addressed by their facts (`module.digest`): the same .ko in two packages is
  one row. `module.facts` (compressed JSON) is the whole parsed module, enough to run the loader
  rules again; `module_import` is its import list as rows, for questions asked across drivers
  ("who needs this symbol, at which CRC").
- A verdict is one driver build on one kernel, tagged with the rules version that made it; a rules
  change makes it stale and it is recomputed. `detail` holds every module's reasons and warnings.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

stream = Table(
    "stream", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    # Set: its kernels enforce module signatures (module.sig_enforce=1) and trust these certificates
    # (codec.pack of [DER base64, source]); NULL: not enforced.
    Column("trusted_certificates", LargeBinary),
)

symbol = Table(
    "symbol", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(512), nullable=False, unique=True),
)

export = Table(
    "export", metadata,
    Column("id", Integer, primary_key=True),
    # blake2b-128 (hex) of (name, crc, type, namespace, owner): one row per distinct export fact.
    Column("digest", String(32), nullable=False, unique=True),
    Column("symbol_id", Integer, ForeignKey("symbol.id"), nullable=False, index=True),
    Column("crc", BigInteger),
    Column("export_type", String(64), nullable=False),
    Column("namespace", String(200), nullable=False),
    Column("owner", String(512), nullable=False),
)

export_set = Table(
    "export_set", metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("size", Integer, nullable=False),
    Column("members", LargeBinary, nullable=False),
)

kernel = Table(
    "kernel", metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("release", String(200), nullable=False, index=True),
    Column("machine", String(64)),
    Column("flavor", String(64), nullable=False),
    Column("vermagic", String(512)),
    Column("module_layout_crc", BigInteger),
    Column("module_struct_size", Integer),  # sizeof(struct module), checked from 6.4 on; NULL: unknown
    Column("export_set_id", Integer, ForeignKey("export_set.id"), nullable=False),
    Column("config", LargeBinary, nullable=False),  # compressed .config lines
    Column("package_version", String(200)),
    Column("build_date", String(100)),
    Column("sources", Text, nullable=False),  # JSON list: where it was read from
    Column("ingested_at", DateTime(timezone=True), nullable=False),
)

stream_kernel = Table(
    "stream_kernel", metadata,
    Column("stream_id", Integer, ForeignKey("stream.id"), primary_key=True),
    Column("kernel_id", Integer, ForeignKey("kernel.id"), primary_key=True),
    Column("position", Integer, nullable=False),
)

driver = Table(
    "driver", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
)

# Other names of a driver (a module tree's `acpi_call` for the package's `acpi-call`): lookups and
# ingests by an alias go to its driver.
driver_alias = Table(
    "driver_alias", metadata,
    Column("alias", String(200), primary_key=True),
    Column("driver_id", Integer, ForeignKey("driver.id"), nullable=False, index=True),
)

driver_build = Table(
    "driver_build", metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("driver_id", Integer, ForeignKey("driver.id"), nullable=False, index=True),
    Column("package", String(200)),  # package name; NULL for a module tree
    Column("version", String(200)),  # version-release of the package, or given for a tree
    Column("arch", String(64)),
    Column("format", String(16), nullable=False),  # "rpm", "deb" or "tree"
    Column("built_for", String(200)),  # kernel release from the modules' vermagic
    Column("source", Text, nullable=False),  # the path or URL it was read from
    Column("built_from", Text),  # the source kabigate build made it from (-dkms .deb, .src.rpm, tree); NULL: ingested
    Column("greylist", Text),  # JSON list from ELRepo's greylist.txt, NULL when none shipped
    Column("ingested_at", DateTime(timezone=True), nullable=False),
)

module = Table(
    "module", metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False, index=True),
    Column("machine", String(64), nullable=False),
    Column("vermagic", String(512)),
    Column("license", String(200)),
    Column("signer", String(512)),  # NULL: unsigned
    Column("facts", LargeBinary, nullable=False),
)

module_import = Table(
    "module_import", metadata,
    Column("module_id", Integer, ForeignKey("module.id"), primary_key=True),
    Column("symbol_id", Integer, ForeignKey("symbol.id"), primary_key=True),
    Column("crc", BigInteger),  # the module's __versions CRC for it, NULL when it has none
    Column("weak", Boolean, nullable=False),
    Index("ix_module_import_symbol", "symbol_id"),
)

build_module = Table(
    "build_module", metadata,
    Column("build_id", Integer, ForeignKey("driver_build.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("module_id", Integer, ForeignKey("module.id"), nullable=False, index=True),
    Column("path", Text, nullable=False),
)

verdict = Table(
    "verdict", metadata,
    Column("build_id", Integer, ForeignKey("driver_build.id"), primary_key=True),
    Column("kernel_id", Integer, ForeignKey("kernel.id"), primary_key=True),
    Column("rules_version", Integer, nullable=False),
    Column("loads", Boolean, nullable=False),
    Column("modules", Integer, nullable=False),
    Column("modules_loading", Integer, nullable=False),
    Column("first_reason", String(64)),
    Column("failing_symbols", Integer, nullable=False),
    Column("detail", LargeBinary, nullable=False),  # compressed JSON: each module's reasons, warnings
    Index("ix_verdict_kernel", "kernel_id"),
    # a whole matrix's cells read from the index alone, never the rows' details (migration 0012)
    Index("ix_verdict_cells", "rules_version", "kernel_id", "build_id", "loads", "first_reason", "failing_symbols"),
)

build_failure = Table(
    "build_failure", metadata,
    Column("id", Integer, primary_key=True),
    Column("driver_id", Integer, ForeignKey("driver.id"), nullable=False, index=True),
    Column("version", String(200), nullable=False),
    Column("kernel_release", String(200), nullable=False),
    Column("error", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(16)),  # vocabulary.BuildOutcome: failed or excluded; NULL (recorded before 0007) failed
    Column("log", LargeBinary),  # codec.pack of the bounded build log, when kabigate build recorded it
    UniqueConstraint("driver_id", "version", "kernel_release"),
)

gate_run = Table(
    "gate_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),  # names the run where it is published
    Column("kernel_id", Integer, ForeignKey("kernel.id"), nullable=False, index=True),
    Column("baseline_id", Integer, ForeignKey("kernel.id")),
    Column("stream", String(200)),
    Column("outcome", String(32), nullable=False),
    Column("report", LargeBinary, nullable=False),  # compressed gate JSON (reports.gate.gate_json)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_to", Text),  # the ResultsDB API it was published to, once it was
    Column("resultsdb_id", String(64)),
)

waiver = Table(
    "waiver", metadata,
    Column("id", Integer, primary_key=True),
    # shell patterns, as in a waivers file ("*": anything)
    Column("driver", String(512), nullable=False),
    Column("symbol", String(512), nullable=False),
    Column("kernel", String(512), nullable=False),
    Column("reason", Text, nullable=False),
    Column("who", String(512), nullable=False),
    Column("expires", Date),  # NULL: never
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),  # waivers are revoked, never deleted
)

# A stored waiver's copies in WaiverDB: posted by `waiver add --waiverdb` (direction "posted": one
# per item it covers) or read by `waiver import` ("imported": one stored waiver per release the item
# names); a WaiverDB waiver already linked is not imported again.
waiver_link = Table(
    "waiver_link", metadata,
    Column("waiver_id", Integer, ForeignKey("waiver.id"), primary_key=True, index=True),
    Column("api_url", Text, primary_key=True),
    Column("waiverdb_id", String(64), primary_key=True),
    Column("direction", String(16), nullable=False),  # vocabulary.WaiverLink
    Column("subject_identifier", Text, nullable=False),  # the item (kernel NVR) it waives in WaiverDB
    Column("testcase", Text, nullable=False),
    Column("product_version", Text, nullable=False),
    Column("scenario", Text),  # NULL: every scenario
)

task = Table(
    "task", metadata,
    Column("id", Integer, primary_key=True),
    # What makes two requests the same work (a build event's files, a Koji build id, a kernel
    # release to gate): a request whose key is done is not done again.
    Column("key", String(200), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),  # ingest-kernel, ingest-drivers, gate, build
    Column("args", Text, nullable=False),  # JSON: what was asked
    Column("state", String(16), nullable=False),  # queued, running, waiting, done, failed
    Column("attempts", Integer, nullable=False),  # deliveries to a worker
    Column("error", Text),  # a failed task's one-line error
    Column("result", Text),  # JSON: what it made (a kernel release, build labels, a gate run)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_task_state", "state"),
)

# Notifications (services/notify.py): who follows what, the events, and the outbox of deliveries.
subscription = Table(
    "subscription", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("target_kind", String(16), nullable=False),  # vocabulary.SubscriptionTarget
    Column("target", String(200), nullable=False),  # a driver package's or a stream's name
    Column("channel", String(16), nullable=False),  # vocabulary.ChannelKind
    Column("address", String(2048), nullable=False),  # e-mail address, webhook URL; "" for the bus
    Column("secret", Text),  # a webhook's HMAC key; never shown
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("target_kind", "target", "channel", "address"),
)

notification_event = Table(
    "notification_event", metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),  # names it to receivers (message id, headers)
    # What makes two events the same (kind, package, stream, kernel): a gate run again adds none.
    Column("key", String(700), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),  # vocabulary.EventKind
    Column("driver", String(200), index=True),  # NULL: a stream's event (gate-blocked)
    Column("stream", String(200), index=True),
    Column("kernel_release", String(200), nullable=False),
    Column("gate_run", String(36)),  # the gate run that saw it
    Column("payload", Text, nullable=False),  # JSON: reports.notifications.event_json
    Column("created_at", DateTime(timezone=True), nullable=False),
)

notification_delivery = Table(
    "notification_delivery", metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("notification_event.id"), nullable=False),
    Column("subscription_id", Integer, ForeignKey("subscription.id"), nullable=False, index=True),
    Column("state", String(16), nullable=False),  # vocabulary.DeliveryState
    Column("attempts", Integer, nullable=False),
    Column("error", Text),  # the last attempt's one-line error
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True)),  # a sender is on it until then
    Column("delivered_at", DateTime(timezone=True)),
    UniqueConstraint("event_id", "subscription_id"),
    Index("ix_notification_delivery_state", "state"),
)
