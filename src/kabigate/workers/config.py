"""The service's settings: a TOML file (`--config`, else $KABIGATE_CONFIG) and the environment
($KABIGATE_DB, $KABIGATE_BROKER win over the file), checked whole before anything starts.

```toml
db = "postgresql://kabigate@db.example.org/kabigate"
broker = "amqp://kabigate:secret@mq.example.org:5672/%2F"

[worker]
concurrency = 4          # processes per `kabigate worker` (default: the CPUs)
max_attempts = 3         # deliveries of one task before it is recorded as failed (a worker lost each time)
queues = ["kabigate", "kabigate-builds"]   # what a `kabigate worker` takes: ingest and gate tasks, package
                                           # builds (default: both; a build worker takes "kabigate-builds")

[gate]                   # as `kabigate gate` takes them
policy = "/etc/kabigate/policy.toml"
waivers = "/etc/kabigate/waivers.toml"
stablelist = "/etc/kabigate/kabi_stablelist_x86_64"
resultsdb = "https://resultsdb.example.org/api/v2.0"   # token: $KABIGATE_RESULTSDB_TOKEN
testcase = "kabigate.kernel-gate.functional"
waiverdb = "https://waiverdb.example.org/api/v1.0"     # its waivers of the testcase imported before each
product_version = "rhel-9.6"                           # gate (of this product); token: $KABIGATE_WAIVERDB_TOKEN
explain = true           # name each CRC change's likely cause (BTF of the kernels' images; slower)

[listen]
queue = "kabigate-events"                  # a durable queue on the broker's amq.topic exchange
topic_prefix = "org.fedoraproject.prod."   # of the gate results kabigate publishes
allow = ["https://kojipkgs.fedoraproject.org/"]   # where build events may point and workers fetch from (besides
                                                  # koji.topurl), redirects included; compared normalised

[koji]
topurl = "https://kojipkgs.fedoraproject.org"
kernel_packages = ["kernel"]
arch = "x86_64"
streams = { "*.fc41" = "f41", "*.el9*" = "c9s" }   # the build's release -> its stream
hub = "https://koji.fedoraproject.org/kojihub"   # asked for kmod builds' RPMs (XML-RPC)
kmod_packages = ["kmod-*"]   # builds of these package names are kmods
kmod_requires = false        # also any other build with an RPM requiring kernel(sym)/ksym(sym):
                             # a hub call for every completed build
arches = ["x86_64", "aarch64"]   # kmod RPMs of these arches (default: arch)
```
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import urllib.parse
from dataclasses import dataclass, field

from kabigate.errors import InputError, read_capped
from kabigate.formats.toml import parse_toml

MAX_CONFIG_FILE = 1 << 20
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
WORK_QUEUE = "kabigate"  # ingest and gate tasks (kabigate.run)
BUILD_QUEUE = "kabigate-builds"  # package builds (kabigate.build): minutes of compiling each
QUEUES = (WORK_QUEUE, BUILD_QUEUE)


@dataclass(frozen=True)
class Settings:
    db: str | None = None
    broker: str = DEFAULT_BROKER
    concurrency: int | None = None
    max_attempts: int = 3
    queues: tuple[str, ...] = QUEUES
    policy: str | None = None
    waivers: str | None = None
    stablelist: str | None = None
    resultsdb: str | None = None
    testcase: str | None = None
    waiverdb: str | None = None
    product_version: str | None = None
    explain: bool = False
    queue: str = "kabigate-events"
    topic_prefix: str = ""
    allow: tuple[str, ...] = ("https://", "http://")
    koji_topurl: str | None = None
    koji_kernel_packages: tuple[str, ...] = ("kernel",)
    koji_arch: str = "x86_64"
    koji_streams: dict[str, str] = field(default_factory=dict)
    koji_hub: str | None = None
    koji_kmod_packages: tuple[str, ...] = ("kmod-*",)
    koji_kmod_requires: bool = False
    koji_arches: tuple[str, ...] = ()  # kmod RPMs' arches; empty: koji_arch

    def allowed(self, location: str) -> bool:
        return any(is_under(location, prefix) for prefix in self.allow)

    def may_fetch(self, location: str) -> bool:
        """Where a worker may download from, redirects included: the allowed locations and Koji's packages."""
        return self.allowed(location) or (self.koji_topurl is not None and is_under(location, self.koji_topurl))

    def koji_stream(self, release: str) -> str | None:
        return next((stream for pattern, stream in self.koji_streams.items()
                     if fnmatch.fnmatchcase(release, pattern)), None)


# section (None: the top level) -> setting -> (Settings attribute, the TOML type it must have)
_SECTIONS: dict[str | None, dict[str, tuple[str, type]]] = {
    None: {"db": ("db", str), "broker": ("broker", str)},
    "worker": {"concurrency": ("concurrency", int), "max_attempts": ("max_attempts", int), "queues": ("queues", list)},
    "gate": {**{key: (key, str) for key in ("policy", "waivers", "stablelist", "resultsdb", "testcase", "waiverdb",
                                            "product_version")},
             "explain": ("explain", bool)},
    "listen": {"queue": ("queue", str), "topic_prefix": ("topic_prefix", str), "allow": ("allow", list)},
    "koji": {"topurl": ("koji_topurl", str), "kernel_packages": ("koji_kernel_packages", list),
             "arch": ("koji_arch", str), "streams": ("koji_streams", dict), "hub": ("koji_hub", str),
             "kmod_packages": ("koji_kmod_packages", list), "kmod_requires": ("koji_kmod_requires", bool),
             "arches": ("koji_arches", list)},
}


def load_settings(path: str | None = None, **overrides) -> Settings:
    """The settings from `path` (or $KABIGATE_CONFIG), the environment, then `overrides` (command
    line options that were given)."""
    path = path or os.environ.get("KABIGATE_CONFIG")
    values: dict = {}
    if path:
        document = parse_toml(read_capped(path, MAX_CONFIG_FILE, "larger than a config file can be"), path)
        values = _read_sections(document, path)
    for variable, key in (("KABIGATE_DB", "db"), ("KABIGATE_BROKER", "broker")):
        if os.environ.get(variable):
            values[key] = os.environ[variable]
    values.update({key: value for key, value in overrides.items() if value is not None})
    settings = Settings(**values)
    if settings.max_attempts < 1 or (settings.concurrency is not None and settings.concurrency < 1):
        raise InputError(f"{path}: worker concurrency and max_attempts must be at least 1")
    if not settings.queues or not set(settings.queues) <= set(QUEUES):
        raise InputError(f"worker queues are some of {', '.join(QUEUES)}, not {', '.join(settings.queues) or 'none'}")
    if not settings.broker.startswith(("amqp://", "amqps://")):
        raise InputError(f"{settings.broker.split('@')[-1]}: the broker is an amqp:// or amqps:// URL")
    return settings


def _read_sections(document: dict, path: str) -> dict:
    values = {}
    for name, value in document.items():
        section, items = (name, value) if isinstance(value, dict) and name in _SECTIONS else (None, {name: value})
        known = _SECTIONS[section]
        for key, item in items.items():
            where = f"{section}.{key}" if section else key
            if key not in known:
                raise InputError(f"{path}: unknown setting {where}")
            attribute, kind = known[key]
            if not isinstance(item, kind) or (isinstance(item, bool) and kind is not bool):
                raise InputError(f"{path}: {where} must be a {kind.__name__}")
            if isinstance(item, list):  # kind is list
                if not all(isinstance(entry, str) for entry in item):
                    raise InputError(f"{path}: {where} must be a list of strings")
                item = tuple(item)
            if isinstance(item, dict) and not all(isinstance(entry, str) for entry in item.values()):
                raise InputError(f"{path}: {where} must map patterns to stream names")
            values[attribute] = item
    return values


def is_under(location: str, prefix: str) -> bool:
    """Whether a URL or an absolute path is at or below `prefix` (a URL or a path), compared normalised:
    scheme, host and port, then the path's components once %-escapes, `.` and `..` are resolved (a local
    path's symbolic links too). A prefix without a host ("https://") takes every URL of its scheme.
    A bare string prefix would let `/srv/builds/../../etc/shadow` and `https://host.evil` pass."""
    try:
        if "://" in prefix:
            where, within = urllib.parse.urlsplit(location), urllib.parse.urlsplit(prefix)
            if "://" not in location or where.scheme.lower() != within.scheme.lower():
                return False
            return not within.netloc or ((where.hostname, _port(where)) == (within.hostname, _port(within))
                                         and _path_under(_url_path(where.path), _url_path(within.path)))
        if "://" in location or not os.path.isabs(location):
            return False
        return _path_under(os.path.realpath(location), os.path.realpath(prefix))
    except ValueError:  # a port that is not a number, a broken IPv6 address, a NUL in a path
        return False


def _port(url: urllib.parse.SplitResult) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme.lower())


def _url_path(path: str) -> str:
    return posixpath.normpath("/" + urllib.parse.unquote(path).lstrip("/"))


def _path_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")
