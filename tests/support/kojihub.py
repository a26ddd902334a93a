"""A Koji hub for the tests: python's XML-RPC server answering Koji's getBuild, listRPMs and
getRPMDeps with the shapes kojihub.py gives (get_build(), list_rpms(), RootExports.getRPMDeps()),
from the real RPMs of a Koji package tree (topdir/packages/NAME/VERSION/RELEASE/ARCH/*.rpm),
their headers read with `rpm -qp` as the hub reads them with koji.get_header_fields(). Keyword
arguments arrive as koji.encode_args() sends them (a last struct marked __starstar).

`hostile` maps a build id to what the hub answers instead of its getBuild, or of its listRPMs: a
value, or RawXML, which is sent as it is (XML-RPC that xmlrpc.server would never write)."""

from __future__ import annotations

import socketserver
import subprocess
import threading
import xmlrpc.client
import xmlrpc.server
from pathlib import Path
from typing import Self

DEP_REQUIRE = 0
QUERY = "%{NAME}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n"


class RawXML(str):
    """An answer's <value> as the hub sends it, e.g. a struct member without <value> or <name>."""


# xmlrpc.client's marshaller (which xmlrpc.server answers with) picks a writer by type: this one writes as is.
xmlrpc.client.Marshaller.dispatch[RawXML] = lambda _marshaller, value, write: write(value)


class KojiHub:
    def __init__(self, topdir: Path, builds: dict[int, tuple[str, str, str]]):
        """builds: {build id: (name, version, release)}, each a folder of topdir/packages."""
        self.topdir = topdir
        self.builds = builds
        self.hostile: dict[int, dict] = {}
        self.rpms: list[dict] = []
        for build_id, (name, version, release) in sorted(builds.items()):
            for path in sorted((topdir / "packages" / name / version / release).glob("*/*.rpm")):
                header = subprocess.run(["rpm", "-qp", "--nosignature", "--qf", QUERY, str(path)], check=True,
                                        capture_output=True, text=True).stdout.split("\t")
                self.rpms.append({"id": len(self.rpms) + 1, "name": header[0], "version": header[1],
                                  "release": header[2], "arch": header[3].strip(), "epoch": None,
                                  "nvr": f"{header[0]}-{header[1]}-{header[2]}", "build_id": build_id,
                                  "buildroot_id": None, "external_repo_id": 0, "external_repo_name": "INTERNAL",
                                  "metadata_only": False, "extra": None, "size": path.stat().st_size,
                                  "path": str(path)})
        self.server = _Server(("127.0.0.1", 0), _Handler, allow_none=True, logRequests=False)
        self.server.register_instance(self)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/kojihub"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _dispatch(self, method: str, params: tuple):
        args, opts = list(params), {}
        if args and isinstance(args[-1], dict) and args[-1].get("__starstar"):  # koji.decode_args()
            opts = {k: v for k, v in args.pop().items() if k != "__starstar"}
        handler = {"getBuild": self.get_build, "listRPMs": self.list_rpms, "getRPMDeps": self.get_rpm_deps}[method]
        return handler(*args, **opts)

    def get_build(self, build_info: int, strict: bool = False):
        if "getBuild" in self.hostile.get(build_info, {}):
            return self.hostile[build_info]["getBuild"]()
        if build_info not in self.builds:
            return None
        name, version, release = self.builds[build_info]
        return {"id": build_info, "build_id": build_info, "name": name, "package_name": name, "version": version,
                "release": release, "epoch": None, "nvr": f"{name}-{version}-{release}", "state": 1,
                "volume_id": 0, "volume_name": "DEFAULT", "owner_name": "kmods-sig", "task_id": None,
                "extra": None, "cg_id": None, "cg_name": None}

    def list_rpms(self, buildID=None, arches=None, **_other):
        if "listRPMs" in self.hostile.get(buildID, {}):
            return self.hostile[buildID]["listRPMs"]()
        arches = [arches] if isinstance(arches, str) else arches
        return [{k: v for k, v in rpm.items() if k != "path"} for rpm in self.rpms
                if rpm["build_id"] == buildID and (arches is None or rpm["arch"] in arches)]

    def get_rpm_deps(self, rpm_id: int, dep_type=None):
        rpm = next((rpm for rpm in self.rpms if rpm["id"] == rpm_id), None)
        if rpm is None or dep_type not in (None, DEP_REQUIRE):
            return []
        lines = subprocess.run(["rpm", "-qp", "--nosignature", "--qf",
                                "[%{REQUIRENAME}\t%{REQUIREVERSION}\t%{REQUIREFLAGS}\n]", rpm["path"]],
                               check=True, capture_output=True, text=True).stdout.splitlines()
        return [{"name": name, "version": version, "flags": int(flags), "type": DEP_REQUIRE}
                for name, version, flags in (line.split("\t") for line in lines)]


class _Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    rpc_paths = ("/kojihub",)  # Koji's hub URL: https://koji.fedoraproject.org/kojihub


class _Server(socketserver.ThreadingMixIn, xmlrpc.server.SimpleXMLRPCServer):
    daemon_threads = True  # a client that stops reading a huge answer does not hold up shutdown()
    block_on_close = False
