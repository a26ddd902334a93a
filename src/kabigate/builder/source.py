"""A driver package built from its source against a kernel's build tree, the way the field's tools
build it (dkms, rpmbuild --rebuild, make M=), in the sandbox, and signed with a repository's or a
host's key when one is given: for kabigate build, gate --rebuild and preflight --build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kabigate.builder import dkms, kbuild, srpm
from kabigate.builder.buildtree import BuildTree
from kabigate.builder.result import BuildResult
from kabigate.builder.sandbox import Limits
from kabigate.errors import InputError
from kabigate.signing.keys import SigningKey
from kabigate.signing.sign import commit, sign_files


@dataclass(frozen=True)
class Signing:
    """The repository's key that signs every built module (sign-file's hash algorithm)."""

    key: SigningKey
    hash_name: str = "sha256"


def is_build_source(path: Path) -> bool:
    return srpm.is_source_rpm(path) or dkms.is_dkms_source(path) or kbuild.is_kbuild_source(path)


def build_source(source: Path, tree: BuildTree, work: Path, limits: Limits, name: str | None = None,
                 version: str | None = None, signing: Signing | None = None) -> BuildResult:
    """Build `source` against `tree` in the sandbox (work: an empty folder, the built modules stay in
    it); a built module is signed like sign-file signs it (re-signed if dkms already did)."""
    if srpm.is_source_rpm(source):
        result = srpm.build(source, tree, work, limits)
    elif dkms.is_dkms_source(source):
        result = dkms.build(source, tree, work, limits)
    elif kbuild.is_kbuild_source(source):
        result = kbuild.build(source, tree, work, limits, name, version)
    else:
        raise InputError(f"{source}: not a *-dkms .deb, a folder with dkms.conf, a kmod .src.rpm nor a Kbuild folder")
    result.package = name or result.package
    result.version = version or result.version
    if signing is not None and result.modules:
        commit(sign_files([str(m) for m in result.modules], signing.key, signing.hash_name, replace=True))
        result.signer = signing.key.signer
    return result
