"""Build events turned into requests: Koji's buildsys.build.state.change (a kernel package's
build, or a kmod build whose RPMs the hub names) and kabigate's own kabigate.build.complete."""

from __future__ import annotations

from typing import TypeGuard

from kabigate.errors import InputError
from kabigate.workers.config import Settings
from kabigate.workers.koji import is_kmod_name, kmod_request
from kabigate.workers.work import KOJI_COMPLETE, Request, ingest_drivers_request, ingest_kernel_request

MAX_FIELD = 4096


def event_request(topic: str, body, settings: Settings) -> Request | None:
    """The request a build event makes, None when it is not for kabigate (another package, a build
    that did not complete). Bodies come from the network: checked field by field, InputError."""
    if not isinstance(body, dict):
        raise InputError(f"{topic[:200]}: the message body is not a JSON object")
    if topic.endswith("buildsys.build.state.change"):
        return _koji_request(body, settings)
    if topic.endswith("kabigate.build.complete"):
        return _kabigate_request(body, settings)
    return None


def _kabigate_request(body: dict, settings: Settings) -> Request:
    """kabigate's own message (kabigate_messages.BuildCompleteV1: validated against its schema)."""
    files = body.get("files")
    if not isinstance(files, list) or not files or not all(_text(f) for f in files):
        raise InputError("kabigate.build.complete: files must be a list of paths or URLs")
    for location in files:
        if not settings.allowed(location):
            raise InputError(f"kabigate.build.complete: {location[:200]} is not under an allowed location "
                             "(listen.allow)")
    fields = {key: body.get(key) for key in ("stream", "name", "version", "build_id")}
    if not all(value is None or _text(value) for value in fields.values()):
        raise InputError("kabigate.build.complete: stream, name, version and build_id are strings")
    build_id = f"build:{fields['build_id']}" if fields["build_id"] else None
    if body.get("kind") == "kernel":
        return ingest_kernel_request(files, fields["stream"], gate=fields["stream"] is not None, build_id=build_id)
    if body.get("kind") == "drivers":
        return ingest_drivers_request(files, fields["name"], fields["version"], build_id=build_id)
    raise InputError("kabigate.build.complete: kind must be kernel or drivers")


def _koji_request(body: dict, settings: Settings) -> Request | None:
    """Koji's buildsys.build.state.change: a kernel package's build that reached COMPLETE, read
    from Koji's package tree (topurl/packages/NAME/VERSION/RELEASE/ARCH/); a kmod build's, whose
    RPMs the hub names (workers/koji.py), when koji.hub is set."""
    if body.get("new") != KOJI_COMPLETE:
        return None
    if body.get("name") not in settings.koji_kernel_packages:
        return _koji_kmod_request(body, settings)
    name, version, release = body["name"], body.get("version"), body.get("release")
    if not (_text(version) and _text(release) and "/" not in version + release and ".." not in version + release):
        raise InputError(f"buildsys.build.state.change: build {name} has no usable version and release")
    if settings.koji_topurl is None:
        raise InputError("buildsys.build.state.change: koji.topurl is not configured")
    stream = settings.koji_stream(release)
    if stream is None:
        return None  # a kernel of no stream kabigate gates
    arch = settings.koji_arch
    base = f"{settings.koji_topurl.rstrip('/')}/packages/{name}/{version}/{release}/{arch}"
    # kernel-core holds symvers and vmlinuz, kernel-devel the build tree (inputs/kernels.py reads both)
    paths = [f"{base}/{name}-{part}-{version}-{release}.{arch}.rpm" for part in ("core", "devel")]
    build = body.get("build_id")
    identity = f"koji:{body.get('instance', 'primary')}:{build}" if isinstance(build, int) else None
    return ingest_kernel_request(paths, stream, gate=True, build_id=identity)


def _koji_kmod_request(body: dict, settings: Settings) -> Request | None:
    name = body.get("name")
    if (settings.koji_hub is None or not _text(name)
            or not (settings.koji_kmod_requires or is_kmod_name(name, settings))):
        return None
    build, instance = body.get("build_id"), body.get("instance", "primary")
    if type(build) is not int or not _text(instance):
        raise InputError(f"buildsys.build.state.change: build {name[:200]} has no build_id and instance")
    return kmod_request(build, instance, name, settings)


def _text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_FIELD and value.isprintable()
