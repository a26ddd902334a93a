"""Waivers kept in one place: a stored waiver posted to WaiverDB (one WaiverDB waiver per item and
scenario of the stored kernels its kernel pattern covers), WaiverDB's waivers of the gate's testcases
imported into the store (so a gate applies them, and its published result says so), and a revocation
posted as WaiverDB's waived=false. Each copy is linked in the store, so nothing is copied twice."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.formats.gatepolicy import Waiver, waiver_from_mapping
from kabigate.reports import waiverdb
from kabigate.reports.gate import kernel_item, scenario_of
from kabigate.store import KernelRecord, Store, WaiverDbLink
from kabigate.vocabulary import WaiverLink

TOKEN_ENV = "KABIGATE_WAIVERDB_TOKEN"  # WaiverDB's token, never on a command line
MAX_POSTED = 200  # WaiverDB waivers one kabigate waiver may become: a broader one is refused


@dataclass(frozen=True)
class Target:
    """Where a waiver is in WaiverDB: the API, the gate's testcase, the product version."""

    api_url: str
    testcase: str
    product_version: str | None
    token: str | None

    @classmethod
    def from_env(cls, api_url: str, testcase: str, product_version: str | None) -> Target:
        return cls(api_url, testcase, product_version, os.environ.get(TOKEN_ENV))


def _subjects(kernels: list[KernelRecord], pattern: str) -> list[tuple[str, str]]:
    """(item, scenario) of each stored kernel the release pattern covers, in each of its streams."""
    found = []
    for kernel in kernels:
        if fnmatch.fnmatchcase(kernel.release, pattern):
            item = kernel_item(kernel.release, kernel.package_version)
            streams: list[str | None] = [name for name, _ in kernel.streams] or [None]
            for stream in streams:
                if (item, scenario_of(kernel.machine, stream)) not in found:
                    found.append((item, scenario_of(kernel.machine, stream)))
    return found


def add_and_post(store: Store, fields: dict, target: Target) -> tuple[Waiver, list[WaiverDbLink]]:
    """Store a waiver and post it to WaiverDB: posted first (a refusal stores nothing), then stored
    with its links in one transaction."""
    if not target.product_version:
        raise InputError("--waiverdb: give --product-version (WaiverDB keeps waivers per product version)")
    waiver = waiver_from_mapping(fields, "waiver")
    subjects = _subjects(store.kernels(), waiver.kernel)
    if not subjects:
        raise InputError(f"kernel pattern {waiver.kernel!r} covers no stored kernel: WaiverDB waives a kernel's "
                         "item, give a pattern of stored releases")
    if len(subjects) > MAX_POSTED:
        raise InputError(f"kernel pattern {waiver.kernel!r} covers {len(subjects)} kernel items and scenarios "
                         f"(more than {MAX_POSTED}): narrow it")
    payloads = [waiverdb.waiver_payload(waiver, item, target.testcase, target.product_version, scenario)
                for item, scenario in subjects]
    created = waiverdb.post_waivers(target.api_url, payloads, target.token)
    with store.transaction():
        waiver_id = store.add_waiver(waiver)
        links = [WaiverDbLink(waiver_id, target.api_url, remote.id, WaiverLink.POSTED, item, target.testcase,
                              target.product_version, scenario)
                 for remote, (item, scenario) in zip(created, subjects, strict=True)]
        for link in links:
            store.link_waiver(link)
    return next(w for w in store.waivers() if w.id == waiver_id), links


def revoke_and_post(store: Store, waiver_id: int, api_url: str, token: str | None) -> tuple[Waiver, int]:
    """Revoke a stored waiver, and its copies in WaiverDB (a waived=false waiver of each item and
    scenario); the waiver as revoked and the copies revoked."""
    links = [link for link in store.waiver_links(api_url) if link.waiver_id == waiver_id]
    if links:
        payloads = [waiverdb.revocation_payload(link.subject_identifier, link.testcase, link.product_version,
                                                link.scenario, f"revoked in kabigate (store#{waiver_id})")
                    for link in links]
        waiverdb.post_waivers(api_url, payloads, token)
    with store.transaction():
        return store.revoke_waiver(waiver_id), len(links)


@dataclass
class Imported:
    """What an import did."""

    added: list[Waiver] = field(default_factory=list)
    revoked: list[Waiver] = field(default_factory=list)
    known: int = 0  # WaiverDB waivers already linked to stored waivers
    not_stored: list[str] = field(default_factory=list)  # items of no stored kernel
    refused: list[str] = field(default_factory=list)  # why a waiver was not imported (its mark's patterns)


def import_waivers(store: Store, target: Target) -> Imported:
    """WaiverDB's current waivers of the testcase into the store, in one transaction. One kabigate
    posted becomes the stored waiver its mark describes (once, however many items it was posted for);
    one written in WaiverDB forgives, as Greenwave applies it, everything on each stored release of
    its item (of its scenario's architecture, when it has one). A current waived=false revokes the
    stored waivers imported from what it supersedes."""
    remote = waiverdb.fetch_waivers(target.api_url, target.testcase, target.product_version, target.token)
    links = store.waiver_links(target.api_url)
    linked = {link.waiverdb_id for link in links}
    kernels = store.kernels()
    result = Imported()
    same: dict[tuple, int] = {_key(w): w.id for w in store.waivers() if w.id is not None}
    added: list[int] = []
    with store.transaction():
        for waiver in remote:
            if waiver.id in linked:
                result.known += 1
                continue
            if not waiver.waived:
                superseded = {link.waiver_id for link in links if link.direction == WaiverLink.IMPORTED
                              and (link.subject_identifier, link.testcase, link.product_version)
                              == (waiver.subject_identifier, waiver.testcase, waiver.product_version)}
                for waiver_id in sorted(superseded & set(same.values())):
                    result.revoked.append(store.revoke_waiver(waiver_id))
                    same = {key: i for key, i in same.items() if i != waiver_id}
                continue
            marked = waiver.patterns()
            if marked is not None:
                entries = [{"driver": "*", "symbol": "*", "kernel": "*", "who": waiver.username or "WaiverDB",
                            **marked, "reason": waiver.reason}]
            else:
                entries = [{"kernel": release, "reason": waiver.reason, "who": waiver.username or "WaiverDB"}
                           for release in _releases(kernels, waiver)]
                if not entries:
                    result.not_stored.append(waiver.subject_identifier)
                    continue
            for entry in entries:
                try:  # a mark edited in WaiverDB into nonsense: that waiver is not imported, the others are
                    checked = waiver_from_mapping(entry, f"WaiverDB waiver {waiver.id}")
                except InputError as error:
                    result.refused.append(str(error))
                    continue
                stored_id = same.get(_key(checked))
                if stored_id is None:
                    stored_id = same[_key(checked)] = store.add_waiver(checked)
                    added.append(stored_id)
                store.link_waiver(WaiverDbLink(stored_id, target.api_url, waiver.id, WaiverLink.IMPORTED,
                                               waiver.subject_identifier, waiver.testcase, waiver.product_version,
                                               waiver.scenario))
    result.added = [w for w in store.waivers() if w.id in added]
    return result


def _key(waiver: Waiver) -> tuple:
    """What makes two waivers the same: an imported one equal to a stored one is linked to it."""
    return waiver.driver, waiver.symbol, waiver.kernel, waiver.reason, waiver.who, waiver.expires


def _releases(kernels: list[KernelRecord], waiver: waiverdb.RemoteWaiver) -> list[str]:
    """The stored releases of the waiver's item (and of its scenario's architecture)."""
    if waiver.subject_type != waiverdb.SUBJECT_TYPE:
        return []
    arch = waiver.scenario.split(".", 1)[0] if waiver.scenario else None
    return sorted({k.release for k in kernels if kernel_item(k.release, k.package_version) == waiver.subject_identifier
                   and (arch is None or (k.machine or "noarch") == arch)})
