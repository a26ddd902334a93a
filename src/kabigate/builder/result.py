"""What a build did, and its one output shape (kabigate build --json, the store's record of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kabigate.vocabulary import BuildOutcome


@dataclass
class BuildResult:
    """One package version built against one kernel. `error` is the first compiler error line
    (failed) or dkms's reason (excluded); `modules` the built .ko files, in the work folder."""

    outcome: BuildOutcome
    package: str
    version: str | None
    kernel_release: str
    method: str  # dkms, kbuild
    seconds: float
    log: str
    error: str | None = None
    modules: list[Path] = field(default_factory=list)
    signer: str | None = None  # who signed the built modules (kabigate build --sign-key)
    limit: str | None = None  # the sandbox limit that stopped the build (its error says it too)

    def json(self) -> dict:
        return {"outcome": self.outcome, "package": self.package, "version": self.version,
                "kernel_release": self.kernel_release, "method": self.method, "seconds": round(self.seconds, 1),
                "error": self.error, "modules": sorted(p.name for p in self.modules), "signer": self.signer}
