"""What the store keeps of what was read: kernels (their exports, shared between kernels as
content-addressed rows), streams, driver builds (their modules and imports, likewise shared) and
the builds that failed."""

from __future__ import annotations

import base64
import bisect
import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select, text, update

from kabigate.errors import InputError
from kabigate.model import Export, Kernel, Module, PackageOrigin, driver_name, version_key
from kabigate.store import codec
from kabigate.store import schema as t
from kabigate.store.base import CHUNK, StoreBase, StoreError, utc_now

# Exports (a kernel's), read EXPORT_CHUNK ids a query.
EXPORT_ROWS = (select(t.export.c.id, t.symbol.c.name, t.export.c.crc, t.export.c.export_type, t.export.c.namespace,
                      t.export.c.owner)
               .join(t.symbol, t.symbol.c.id == t.export.c.symbol_id))
EXPORT_CHUNK = 10_000

# (old export set digest, new one) -> exports_dropped(): sets are content-addressed, so a pair's count
# never changes; kept across requests (a stream of 200 kernels reads ~3 million ids for it).
_DROPPED: dict[tuple[str, str], int] = {}


@dataclass(frozen=True)
class KernelRecord:
    id: int
    release: str
    machine: str | None
    flavor: str
    vermagic: str | None
    module_layout_crc: int | None
    package_version: str | None
    build_date: str | None
    sources: tuple[str, ...]
    exports: int
    streams: tuple[tuple[str, int], ...]  # (stream, position)


@dataclass(frozen=True)
class BuildRecord:
    id: int
    driver: str
    package: str | None
    version: str | None
    arch: str | None
    format: str
    built_for: str | None
    source: str
    modules: tuple[str, ...]  # module names, in the build's order
    built_from: str | None = None  # the source package or tree kabigate build made it from (gate --rebuild's)
    machine: str | None = None  # its modules' architecture (ELF e_machine as `uname -m` names it); None: no module

    def runs_on(self, kernel: KernelRecord) -> bool:
        """Whether the build is for the kernel's architecture: only such pairs are judged (and a kernel
        whose architecture is unknown, with every build)."""
        return same_architecture(self.machine, kernel.machine)

    @property
    def label(self) -> str:
        return f"{self.driver} {self.version or '?'} (built for {self.built_for or '?'})"



@dataclass(frozen=True)
class BuildFailure:
    driver: str
    version: str
    kernel_release: str
    error: str



def same_architecture(build_machine: str | None, kernel_machine: str | None) -> bool:
    """A build is judged on a kernel of its architecture, and on one whose architecture is unknown: a
    module of another is refused by elf_check_arch() whatever else it holds, which says nothing."""
    return kernel_machine is None or build_machine is None or build_machine == kernel_machine


def flavor_of(release: str) -> str:
    """The kernel flavor a release names: Debian `6.1.0-47-rt-amd64` -> rt-amd64,
    `6.12.107+deb12-cloud-amd64` -> cloud-amd64; RHEL `5.14.0-427.el9.x86_64+rt` -> rt."""
    if "+" in release and not re.search(r"\+deb\d+", release):
        return release.rsplit("+", 1)[1]
    debian = re.match(r"^\d+\.\d+(?:\.\d+)?(?:-\d+|\+deb\d+)-(.+)$", release)
    return debian.group(1) if debian else "default"


class RecordStore(StoreBase):
    """Kernels, streams, driver builds and build failures: stored once, read back as model objects."""

    # -- kernels ------------------------------------------------------------------------------

    def add_kernel(self, kernel: Kernel, stream: str | None = None) -> tuple[KernelRecord, bool]:
        """Store a kernel (and put it in `stream`); (record, False) when it is already stored."""
        if kernel.release is None:
            raise InputError(f"{', '.join(kernel.sources)}: the kernel release is unknown (no vermagic); "
                             "give --vermagic or a tree with an in-tree module")
        exports = sorted(kernel.exports.values(), key=lambda e: e.name)
        export_digests = [codec.export_digest(e) for e in exports]
        digest = hashlib.sha256(json.dumps([kernel.release, kernel.machine, kernel.vermagic,
                                            sorted(kernel.config.items()), export_digests]).encode()).hexdigest()
        connection = self._writing()
        kernel_id = self._ids_by(t.kernel, t.kernel.c.digest, [digest]).get(digest)
        created = False
        if kernel_id is None:
            export_ids = self._export_ids(exports, export_digests)
            self._exports.update(zip(export_ids, exports))  # a gate reads the new kernel back at once
            members = sorted(export_ids)
            set_digest = hashlib.sha256(codec.pack_ids(members)).hexdigest()
            self._insert_ignoring_duplicates(t.export_set, [{"digest": set_digest, "size": len(members),
                                                              "members": codec.pack_ids(members)}])
            layout = kernel.exports.get("module_layout")
            inserted = self._insert_if_new(t.kernel, {
                "digest": digest, "release": kernel.release, "machine": kernel.machine,
                "flavor": flavor_of(kernel.release), "vermagic": kernel.vermagic,
                "module_layout_crc": layout.crc if layout else None,
                "export_set_id": self._ids_by(t.export_set, t.export_set.c.digest, [set_digest])[set_digest],
                "config": codec.pack_config(kernel.config), "package_version": kernel.package_version,
                "module_struct_size": kernel.module_struct_size, "build_date": None,
                "sources": json.dumps(kernel.sources), "ingested_at": utc_now(),
            })
            created = inserted is not None
            # None: a parallel ingest stored the same kernel since the look-up above
            if inserted is not None:
                kernel_id = inserted
            else:
                kernel_id = self._ids_by(t.kernel, t.kernel.c.digest, [digest])[digest]
        if not created:
            self._add_sources(kernel_id, kernel.sources)
            if kernel.module_struct_size is not None:  # a kernel stored before it was kept, read again
                connection.execute(t.kernel.update().where(
                    t.kernel.c.id == kernel_id, t.kernel.c.module_struct_size.is_(None)).values(
                    module_struct_size=kernel.module_struct_size))
        if stream is not None:
            self._put_in_stream(kernel_id, stream)
        return self.kernel(kernel_id), created

    def _add_sources(self, kernel_id: int, sources: list[str]) -> None:
        """The same kernel read again from elsewhere (packages after a tree, a mirror): remember where."""
        connection = self._writing()
        stored = connection.execute(select(t.kernel.c.sources).where(t.kernel.c.id == kernel_id)).scalar_one()
        known = json.loads(stored)
        if not set(sources) <= set(known):
            connection.execute(t.kernel.update().where(t.kernel.c.id == kernel_id)
                               .values(sources=json.dumps(known + [s for s in sources if s not in known])))

    def _export_ids(self, exports: list[Export], digests: list[str]) -> list[int]:
        known = {d: self._export_ids_by_digest[d] for d in digests if d in self._export_ids_by_digest}
        known.update(self._ids_by(t.export, t.export.c.digest, [d for d in digests if d not in known]))
        new = sorted(((e, d) for e, d in zip(exports, digests) if d not in known), key=lambda pair: pair[1])
        if new:
            symbols = self._symbol_ids(e.name for e, _ in new)
            known.update(self._stored_ids(t.export, t.export.c.digest, [
                {"digest": d, "symbol_id": symbols[e.name], "crc": e.crc, "export_type": e.export_type,
                 "namespace": e.namespace, "owner": e.owner} for e, d in new]))
        self._export_ids_by_digest.update(known)
        return [known[d] for d in digests]

    def _put_in_stream(self, kernel_id: int, stream: str) -> None:
        """Add the kernel to the stream and renumber the stream in version order."""
        connection = self._writing()
        stream_id = self._named_id(t.stream, stream)
        # PostgreSQL: parallel ingests into one stream number it one after the other, each seeing
        # the other's kernel (SQLite has one writer anyway)
        enforcing = connection.execute(select(t.stream.c.trusted_certificates.is_not(None))
                                       .where(t.stream.c.id == stream_id).with_for_update()).scalar()
        member = connection.execute(select(t.stream_kernel.c.kernel_id).where(
            t.stream_kernel.c.stream_id == stream_id, t.stream_kernel.c.kernel_id == kernel_id)).first()
        if enforcing and member is None:  # a stored kernel joins a stream that enforces signatures: judged again
            connection.execute(delete(t.verdict).where(t.verdict.c.kernel_id == kernel_id))
        self._insert_ignoring_duplicates(t.stream_kernel, [{"stream_id": stream_id, "kernel_id": kernel_id,
                                                            "position": -1}])
        members = connection.execute(
            select(t.kernel.c.id, t.kernel.c.release, t.kernel.c.package_version)
            .join(t.stream_kernel, t.stream_kernel.c.kernel_id == t.kernel.c.id)
            .where(t.stream_kernel.c.stream_id == stream_id)).all()
        ordered = sorted(members, key=lambda row: (version_key(row.package_version or row.release),
                                                   version_key(row.release)))
        for position, row in enumerate(ordered):
            connection.execute(t.stream_kernel.update()
                               .where(t.stream_kernel.c.stream_id == stream_id,
                                      t.stream_kernel.c.kernel_id == row.id)
                               .values(position=position))

    def kernels(self, stream: str | None = None) -> list[KernelRecord]:
        """Stored kernels: those of `stream` in its order, or all (by stream, then release)."""
        records = self._kernel_records()
        if stream is None:
            return sorted(records, key=lambda r: (not r.streams, r.streams[:1], version_key(r.release)))
        if stream not in self.streams():
            streams = ", ".join(self.streams()) or "none"
            raise InputError(f"no stream named {stream!r} in the store (streams: {streams})")
        in_stream = [(dict(r.streams)[stream], r) for r in records if stream in dict(r.streams)]
        return [record for _, record in sorted(in_stream, key=lambda pair: pair[0])]

    def kernel(self, kernel_id: int) -> KernelRecord:
        return self._kernel_records(t.kernel.c.id == kernel_id)[0]

    def find_kernels(self, release: str) -> list[KernelRecord]:
        return self._kernel_records(t.kernel.c.release == release)

    def _kernel_records(self, *where) -> list[KernelRecord]:
        with self._reading() as connection:
            streams: dict[int, list[tuple[str, int]]] = {}
            for kernel_id, name, position in connection.execute(
                    select(t.stream_kernel.c.kernel_id, t.stream.c.name, t.stream_kernel.c.position)
                    .join(t.stream, t.stream.c.id == t.stream_kernel.c.stream_id)):
                streams.setdefault(kernel_id, []).append((name, position))
            rows = connection.execute(
                select(t.kernel, t.export_set.c.size)
                .join(t.export_set, t.export_set.c.id == t.kernel.c.export_set_id).where(*where)
                .order_by(t.kernel.c.id)).all()
        return [KernelRecord(
            id=row.id, release=row.release, machine=row.machine, flavor=row.flavor, vermagic=row.vermagic,
            module_layout_crc=row.module_layout_crc, package_version=row.package_version,
            build_date=row.build_date, sources=tuple(json.loads(row.sources)), exports=row.size,
            streams=tuple(sorted(streams.get(row.id, ()))),
        ) for row in rows]

    def streams(self) -> list[str]:
        with self._reading() as connection:
            return list(connection.scalars(select(t.stream.c.name).order_by(t.stream.c.name)))

    def enforce_signatures(self, stream: str, certificates: list[tuple[bytes, str]] | None) -> list[int]:
        """Mark `stream` as enforcing module signatures with these trusted certificates (DER,
        where it came from), or (None) as not enforcing; its kernels' verdicts are dropped, to be
        judged again under the new setting. The ids of its kernels."""
        connection = self._writing()
        stream_id = connection.execute(select(t.stream.c.id).where(t.stream.c.name == stream)).scalar()
        if stream_id is None:
            streams = ", ".join(self.streams()) or "none"
            raise InputError(f"no stream named {stream!r} in the store (streams: {streams})")
        packed = None if certificates is None else codec.pack(
            [[base64.b64encode(der).decode(), source] for der, source in certificates])
        connection.execute(update(t.stream).where(t.stream.c.id == stream_id).values(trusted_certificates=packed))
        kernel_ids = list(connection.scalars(select(t.stream_kernel.c.kernel_id)
                                             .where(t.stream_kernel.c.stream_id == stream_id)))
        connection.execute(delete(t.verdict).where(t.verdict.c.kernel_id.in_(kernel_ids)))
        return kernel_ids

    def enforcing_streams(self) -> dict[str, list[tuple[bytes, str]]]:
        """Streams that enforce module signatures -> the certificates their kernels trust."""
        with self._reading() as connection:
            rows = connection.execute(select(t.stream.c.name, t.stream.c.trusted_certificates)
                                      .where(t.stream.c.trusted_certificates.is_not(None))).all()
        return {row.name: [(base64.b64decode(der), source) for der, source in codec.unpack(row.trusted_certificates)]
                for row in rows}

    def signature_trust(self, kernel_id: int) -> list[tuple[bytes, str]] | None:
        """The certificates a kernel trusts when one of its streams enforces module signatures (those
        of every such stream), or None: its streams do not enforce them."""
        return self.signature_trusts([kernel_id])[kernel_id]

    def signature_trusts(self, kernel_ids: list[int]) -> dict[int, list[tuple[bytes, str]] | None]:
        """signature_trust() of several kernels in one query (judging a build reads every kernel's)."""
        blobs: dict[int, list[bytes]] = {}
        with self._reading() as connection:
            for start in range(0, len(kernel_ids), CHUNK):
                for kernel_id, blob in connection.execute(
                        select(t.stream_kernel.c.kernel_id, t.stream.c.trusted_certificates)
                        .join(t.stream_kernel, t.stream_kernel.c.stream_id == t.stream.c.id)
                        .where(t.stream_kernel.c.kernel_id.in_(kernel_ids[start:start + CHUNK]),
                               t.stream.c.trusted_certificates.is_not(None))
                        .order_by(t.stream_kernel.c.kernel_id, t.stream.c.id)):
                    blobs.setdefault(kernel_id, []).append(blob)
        return {kernel_id: [(base64.b64decode(der), source) for blob in blobs[kernel_id]
                            for der, source in codec.unpack(blob)] if kernel_id in blobs else None
                for kernel_id in kernel_ids}
    def exports_dropped(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """For each (old kernel id, new kernel id): how many of the old kernel's exports the new one
        does not hold as they were (removed, or their CRC, type, namespace or owner changed: an export
        row is one such fact). 0 for kernels sharing one export set; each set is read once."""
        with self._reading() as connection:
            digest_of = dict(connection.execute(
                select(t.kernel.c.id, t.export_set.c.digest)
                .join(t.export_set, t.export_set.c.id == t.kernel.c.export_set_id)
                .where(t.kernel.c.id.in_({i for pair in pairs for i in pair}))).all())
            keys = {(old, new): (digest_of[old], digest_of[new]) for old, new in pairs}
            wanted = {d for a, b in keys.values() if a != b and (a, b) not in _DROPPED for d in (a, b)}
            members = {digest: set(codec.unpack_ids(blob)) for digest, blob in connection.execute(
                select(t.export_set.c.digest, t.export_set.c.members).where(t.export_set.c.digest.in_(wanted)))}
        if len(_DROPPED) > 100_000:
            _DROPPED.clear()
        for a, b in keys.values():
            if (a, b) not in _DROPPED:
                _DROPPED[(a, b)] = 0 if a == b else len(members[a] - members[b])
        return {pair: _DROPPED[key] for pair, key in keys.items()}

    def export_of(self, name: str) -> dict[int, Export]:
        """Kernel id -> its export of the symbol `name`, for every stored kernel that exports it. The
        symbol's few export rows are looked for in each export set (sorted ids: a binary search each)."""
        with self._reading() as connection:
            rows = {row.id: Export(name, row.crc, row.owner, row.export_type, row.namespace)
                    for row in connection.execute(
                        select(t.export.c.id, t.export.c.crc, t.export.c.owner, t.export.c.export_type,
                               t.export.c.namespace)
                        .join(t.symbol, t.symbol.c.id == t.export.c.symbol_id).where(t.symbol.c.name == name))}
            if not rows:
                return {}
            found: dict[int, Export] = {}
            in_set: dict[int, Export | None] = {}
            for kernel_id, set_id in connection.execute(select(t.kernel.c.id, t.kernel.c.export_set_id)).all():
                if set_id not in in_set:
                    ids = codec.unpack_ids(connection.execute(select(t.export_set.c.members)
                                                              .where(t.export_set.c.id == set_id)).scalar_one())
                    in_set[set_id] = next((rows[i] for i in rows
                                           if (at := bisect.bisect_left(ids, i)) < len(ids) and ids[at] == i), None)
                export = in_set[set_id]
                if export is not None:
                    found[kernel_id] = export
        return found

    def symbols_matching(self, text: str, limit: int) -> list[str]:
        """Up to `limit` symbol names (exported or imported) containing `text` (any case), those starting
        with it first."""
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        name = t.symbol.c.name
        starts = name.ilike(pattern + "%", escape="\\")
        with self._reading() as connection:
            found = list(connection.scalars(select(name).where(starts).order_by(name).limit(limit)))
            if len(found) < limit:
                found += connection.scalars(select(name).where(name.ilike("%" + pattern + "%", escape="\\"), ~starts)
                                            .order_by(name).limit(limit - len(found)))
        return found

    def load_kernel(self, kernel_id: int) -> Kernel:
        """The stored kernel as the loader rules take it."""
        return self.load_kernels([kernel_id])[kernel_id]

    def load_kernels(self, kernel_ids: list[int]) -> dict[int, Kernel]:
        """Several stored kernels at once (judging a new build reads every stored kernel)."""
        kernels = {}
        with self._reading() as connection:
            for start in range(0, len(kernel_ids), CHUNK):
                rows = connection.execute(  # all fetched first: reading the exports is another query
                    select(t.kernel).where(t.kernel.c.id.in_(kernel_ids[start:start + CHUNK]))).all()
                unread = {row.export_set_id: row.release for row in rows if row.export_set_id not in self._set_exports}
                for set_id, members in (connection.execute(
                        select(t.export_set.c.id, t.export_set.c.members)
                        .where(t.export_set.c.id.in_(list(unread)))).all() if unread else ()):
                    self._set_exports[set_id] = self._exports_by_name(connection, codec.unpack_ids(members),
                                                                      unread[set_id])
                for row in rows:
                    # a copy of the exports: the caller's to change (~1 ms; reading them is ~170 ms)
                    kernels[row.id] = Kernel(
                        release=row.release, vermagic=row.vermagic, machine=row.machine,
                        exports=dict(self._set_exports[row.export_set_id]),
                        config=codec.unpack_config(row.config), sources=json.loads(row.sources),
                        package_version=row.package_version, module_struct_size=row.module_struct_size)
        return {kernel_id: kernels[kernel_id] for kernel_id in kernel_ids}

    def export_difference(self, old_id: int, new_id: int) -> tuple[dict[str, Export], dict[str, Export]]:
        """Each of two stored kernels' exports that are not one record in both (name -> Export): all a
        diff of the two needs (analysis.diff_exports), without reading the thousands they share."""
        with self._reading() as connection:
            rows = connection.execute(select(t.kernel.c.id, t.kernel.c.release, t.export_set.c.members)
                                      .join(t.export_set, t.export_set.c.id == t.kernel.c.export_set_id)
                                      .where(t.kernel.c.id.in_([old_id, new_id]))).all()
            members = {row.id: (row.release, set(codec.unpack_ids(row.members))) for row in rows}
            (old_release, old_ids), (new_release, new_ids) = members[old_id], members[new_id]
            return (self._exports_by_name(connection, sorted(old_ids - new_ids), old_release),
                    self._exports_by_name(connection, sorted(new_ids - old_ids), new_release))

    def _exports_by_name(self, connection, ids: list[int], release: str) -> dict[str, Export]:
        """The exports of these ids (a kernel's), read unless read before."""
        missing = [i for i in ids if i not in self._exports]
        for start in range(0, len(missing), EXPORT_CHUNK):
            # The ids written into the statement (integers the store unpacked: nothing to quote), not
            # bound: 900 bound parameters a query cost more than the rows (a kernel page reads two
            # kernels' ~25,000 exports cold); the rows fetched at once.
            listed = ",".join(str(int(i)) for i in missing[start:start + EXPORT_CHUNK])
            rows = connection.execute(EXPORT_ROWS.where(text(f"export.id IN ({listed})"))).all()
            for export_id, name, crc, export_type, namespace, owner in rows:
                self._exports[export_id] = Export(name, crc, owner, export_type, namespace)
        lost = sum(i not in self._exports for i in ids)
        if lost:
            raise StoreError(f"store {self.url} is damaged: kernel {release} names {lost} exports it does not hold")
        return {export.name: export for export in (self._exports[i] for i in ids)}

    # -- driver builds ------------------------------------------------------------------------

    def add_driver_build(self, driver: str, modules: list[Module], *, version: str | None, package: str | None,
                         arch: str | None, format: str, source: str,
                         greylist: tuple[str, ...] | None = None, built_from: str | None = None
                         ) -> tuple[BuildRecord, bool]:
        """Store one driver build (a package's modules, or a tree's): (record, False) if already stored."""
        facts = [codec.module_facts(m) for m in modules]
        module_digests = [codec.facts_digest(f) for f in facts]
        digest = hashlib.sha256(json.dumps([driver, version, package, arch, format, module_digests]).encode()
                                ).hexdigest()
        build_id = self._ids_by(t.driver_build, t.driver_build.c.digest, [digest]).get(digest)
        if build_id is not None:
            return self.driver_build(build_id), False
        module_ids = self._module_ids(modules, facts, module_digests)
        vermagic = next((m.vermagic for m in modules if m.vermagic), None)
        built_for = vermagic.split(" ", 1)[0] if vermagic else None
        canonical, driver_id = self._driver_id(driver)
        row = {"digest": digest, "driver_id": driver_id, "package": package, "version": version, "arch": arch,
               "format": format, "built_for": built_for, "source": source,
               "greylist": None if greylist is None else json.dumps(list(greylist)), "built_from": built_from,
               "ingested_at": utc_now()}
        build_id = self._insert_if_new(t.driver_build, row)
        if build_id is None:  # a parallel ingest stored the same build since the look-up above
            return self.driver_build(self._ids_by(t.driver_build, t.driver_build.c.digest, [digest])[digest]), False
        self._insert_new_rows(t.build_module, [
            {"build_id": build_id, "position": i, "module_id": module_id, "path": m.path}
            for i, (m, module_id) in enumerate(zip(modules, module_ids))])
        # what load_build() and driver_build() would read back (judging reads the new build at once)
        origin = _origin(row)
        self._builds[build_id] = (_build_identity(row, [(m.path, d) for m, d in zip(modules, module_digests)]),
                                  [codec.module_from_facts(fact, m.path, origin) for m, fact in zip(modules, facts)])
        self._written_builds.add(build_id)
        return BuildRecord(id=build_id, driver=canonical, package=package, version=version, arch=arch, format=format,
                           built_for=built_for, source=source, modules=tuple(m.name for m in modules),
                           built_from=built_from, machine=modules[0].machine if modules else None), True

    def _module_ids(self, modules: list[Module], facts: list[dict], digests: list[str]) -> list[int]:
        known = self._ids_by(t.module, t.module.c.digest, digests)
        new = {digest: (module, fact) for module, fact, digest in sorted(zip(modules, facts, digests),
                                                                          key=lambda triple: triple[2])
               if digest not in known}
        if new:
            symbols = self._symbol_ids(i.name for module, _ in new.values() for i in module.imports)
            known.update(self._stored_ids(t.module, t.module.c.digest, [
                {"digest": digest, "name": module.name, "machine": module.machine, "vermagic": module.vermagic,
                 "license": module.license, "signer": module.signature.signer if module.signature else None,
                 "facts": codec.pack(fact)} for digest, (module, fact) in new.items()]))
            imports = []
            for digest, (module, _) in new.items():
                crcs = {v.name: v.crc for v in module.versions or ()}
                imports += [(known[digest], symbols[i.name], crcs.get(i.name), i.weak)
                            for i in {i.name: i for i in module.imports}.values()]  # listed twice: one import
            # a module a parallel ingest stored has its imports already
            self._insert_ignoring_duplicates(t.module_import, [
                {"module_id": module_id, "symbol_id": symbol_id, "crc": crc, "weak": weak}
                for module_id, symbol_id, crc, weak in sorted(imports)])
        return [known[d] for d in digests]

    def driver_builds(self, pattern: str | None = None) -> list[BuildRecord]:
        """Stored builds, by driver name then version; `pattern` is a shell glob on the driver name."""
        records = self._build_records()
        if pattern is not None:
            records = [r for r in records if fnmatch.fnmatchcase(r.driver, pattern)]
        return sorted(records, key=lambda r: (r.driver, version_key(r.version or ""), version_key(r.built_for or ""),
                                              r.id))

    def driver_build(self, build_id: int) -> BuildRecord:
        return self._build_records(t.driver_build.c.id == build_id)[0]

    def _build_records(self, *where) -> list[BuildRecord]:
        with self._reading() as connection:
            names: dict[int, list[str]] = {}
            machines: dict[int, str] = {}  # the first module's: a build's modules are of one architecture
            for build_id, name, machine in connection.execute(
                    select(t.build_module.c.build_id, t.module.c.name, t.module.c.machine)
                    .join(t.module, t.module.c.id == t.build_module.c.module_id)
                    .order_by(t.build_module.c.build_id, t.build_module.c.position)):
                names.setdefault(build_id, []).append(name)
                machines.setdefault(build_id, machine)
            rows = connection.execute(
                select(t.driver_build, t.driver.c.name.label("driver"))
                .join(t.driver, t.driver.c.id == t.driver_build.c.driver_id).where(*where)).all()
        return [BuildRecord(id=row.id, driver=row.driver, package=row.package, version=row.version, arch=row.arch,
                            format=row.format, built_for=row.built_for, source=row.source,
                            modules=tuple(names.get(row.id, ())), built_from=row.built_from,
                            machine=machines.get(row.id)) for row in rows]

    def load_build(self, build_id: int) -> list[Module]:
        """The build's modules as the loader rules take them, in the build's order."""
        return self.load_builds([build_id])[build_id]

    def load_builds(self, build_ids: list[int]) -> dict[int, list[Module]]:
        """Several builds' modules at once (judging a new kernel reads every stored build). A build
        read (or stored) before is taken from memory while what it is read from is the same
        (_build_identity(): a query without the modules' facts, whose decoding is the cost)."""
        checked = [build_id for build_id in build_ids if build_id not in self._written_builds]
        with self._reading() as connection:
            for start in range(0, len(checked), CHUNK):
                chunk = checked[start:start + CHUNK]
                rows = {row.id: row for row in connection.execute(
                    select(t.driver_build).where(t.driver_build.c.id.in_(chunk)))}
                listed: dict[int, list[tuple[str, str]]] = {build_id: [] for build_id in chunk}
                for build_id, path, digest in connection.execute(
                        select(t.build_module.c.build_id, t.build_module.c.path, t.module.c.digest)
                        .join(t.module, t.module.c.id == t.build_module.c.module_id)
                        .where(t.build_module.c.build_id.in_(chunk))
                        .order_by(t.build_module.c.build_id, t.build_module.c.position)):
                    listed[build_id].append((path, digest))
                read = {}
                for build_id in chunk:
                    row = rows.get(build_id)
                    identity = None if row is None else _build_identity(row._mapping, listed[build_id])
                    cached = self._builds.get(build_id)
                    if cached is None or cached[0] != identity:
                        read[build_id] = identity
                if not read:
                    continue
                modules: dict[int, list[Module]] = {build_id: [] for build_id in read}
                for build_id, path, facts in connection.execute(
                        select(t.build_module.c.build_id, t.build_module.c.path, t.module.c.facts)
                        .join(t.module, t.module.c.id == t.build_module.c.module_id)
                        .where(t.build_module.c.build_id.in_(list(read)))
                        .order_by(t.build_module.c.build_id, t.build_module.c.position)):
                    origin = _origin(rows[build_id]._mapping)
                    modules[build_id].append(codec.module_from_facts(codec.unpack(facts), path, origin))
                self._builds.update((build_id, (read[build_id], modules[build_id])) for build_id in read)
        return {build_id: self._builds[build_id][1] for build_id in build_ids}

    def canonical_driver(self, name: str) -> str:
        """The driver `name` is an alias of (kabigate db alias-driver), else the driver its package
        name names (kmod-jool: jool) when only that one is stored, else `name` itself."""
        return self._canonical_driver(name)[0]

    def _canonical_driver(self, name: str) -> tuple[str, int | None]:
        """canonical_driver(name) and its id (None: not stored yet), in one query."""
        with self._reading() as connection:
            rows = connection.execute(
                select(t.driver.c.name, t.driver.c.id, t.driver_alias.c.alias)
                .outerjoin(t.driver_alias, and_(t.driver_alias.c.driver_id == t.driver.c.id,
                                                t.driver_alias.c.alias == name))
                .where(or_(t.driver_alias.c.alias == name, t.driver.c.name.in_([name, driver_name(name)])))).all()
        aliased = [(row.name, row.id) for row in rows if row.alias is not None]
        if aliased:
            return aliased[0]
        stored = {row.name: row.id for row in rows}
        if driver_name(name) != name and set(stored) == {driver_name(name)}:
            return driver_name(name), stored[driver_name(name)]
        return name, stored.get(name)

    def driver_aliases(self) -> dict[str, list[str]]:
        """Each driver's aliases, sorted."""
        with self._reading() as connection:
            rows = connection.execute(select(t.driver.c.name, t.driver_alias.c.alias).join(t.driver_alias)
                                      .order_by(t.driver_alias.c.alias)).all()
        aliases: dict[str, list[str]] = {}
        for name, alias in rows:
            aliases.setdefault(name, []).append(alias)
        return aliases

    def _driver_id(self, name: str) -> tuple[str, int]:
        """The driver `name` names (an alias names its driver) and its id, made if new."""
        canonical, driver_id = self._canonical_driver(name)
        return canonical, self._named_id(t.driver, canonical) if driver_id is None else driver_id

    def record_build_failure(self, driver: str, version: str, kernel_release: str, error: str,
                             outcome: str | None = None, log: str | None = None) -> bool:
        """Remember that a driver version failed to build (or was excluded, `outcome`) for a kernel, with
        its bounded log; False if already recorded."""
        return self._insert_if_new(t.build_failure, {
            "driver_id": self._driver_id(driver)[1], "version": version, "kernel_release": kernel_release,
            "error": error, "recorded_at": utc_now(), "outcome": outcome,
            "log": None if log is None else codec.pack(log)}) is not None

    def build_log(self, driver: str, version: str, kernel_release: str) -> tuple[str | None, str | None] | None:
        """A recorded failure's (outcome, log), None where not recorded; None if there is no such failure."""
        with self._reading() as connection:
            row = connection.execute(
                select(t.build_failure.c.outcome, t.build_failure.c.log)
                .join(t.driver, t.driver.c.id == t.build_failure.c.driver_id)
                .where(t.driver.c.name == self.canonical_driver(driver), t.build_failure.c.version == version,
                       t.build_failure.c.kernel_release == kernel_release)).first()
        if row is None:
            return None
        return row.outcome, None if row.log is None else codec.unpack(row.log)

    def build_failures(self, pattern: str | None = None) -> list[BuildFailure]:
        with self._reading() as connection:
            rows = connection.execute(
                select(t.driver.c.name, t.build_failure.c.version, t.build_failure.c.kernel_release,
                       t.build_failure.c.error)
                .join(t.driver, t.driver.c.id == t.build_failure.c.driver_id)).all()
        failures = [BuildFailure(*row) for row in rows]
        if pattern is not None:
            failures = [f for f in failures if fnmatch.fnmatchcase(f.driver, pattern)]
        return sorted(failures, key=lambda f: (f.driver, version_key(f.version), version_key(f.kernel_release)))


def _build_identity(build: Mapping, modules: list[tuple[str, str]]) -> tuple:
    """What a build's modules are read from (load_builds()): its content's digest, the columns its
    modules' origin takes beyond it, and its modules' paths and digests."""
    return build["digest"], build["source"], build["greylist"], tuple(modules)


def _origin(build: Mapping) -> PackageOrigin | None:
    """The package a stored build (its driver_build row's columns) came from, as modules read from it carry it."""
    if build["format"] not in ("rpm", "deb"):
        return None
    return PackageOrigin(build["source"], build["package"] or "", build["version"] or "", build["arch"] or "",
                         build["format"], None if build["greylist"] is None else tuple(json.loads(build["greylist"])))
