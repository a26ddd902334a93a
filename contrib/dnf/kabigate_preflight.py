"""dnf (4) plugin: before a transaction installs a kernel, run `kabigate preflight` on its
kernel-core package (which carries symvers.gz) and warn about the installed out-of-tree modules
that will not load on it. Copy to the dnf plugin folder (e.g. /usr/lib/python3.9/site-packages/
dnf-plugins/) with contrib/dnf/kabigate_preflight.conf in /etc/dnf/plugins/. With `strict = 1` in
the conf, such a kernel stops the transaction, and so does one kabigate cannot judge (kabigate
missing or failing); without it, both warn and the transaction goes on."""

import subprocess

import dnf
from dnf.exceptions import Error


class KabigatePreflight(dnf.Plugin):
    name = "kabigate_preflight"

    def config(self):
        parser = self.read_config(self.base.conf)
        self.strict = parser.has_option("main", "strict") and parser.getboolean("main", "strict")
        self.command = parser.get("main", "command") if parser.has_option("main", "command") else "kabigate"

    def pre_transaction(self):
        breaking, unjudged = [], []
        for package in self.base.transaction.install_set:
            if package.name not in ("kernel-core", "kernel-rt-core", "kernel-64k-core"):
                continue
            # The modules judged are those of the system dnf installs into (--installroot).
            argv = [self.command, "preflight", "--root", self.base.conf.installroot, package.localPkg()]
            try:
                result = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace")
            except OSError as error:  # not installed, not executable
                unjudged.append(f"{package}: {self.command}: {error.strerror}")
                continue
            if result.stdout:
                print(result.stdout, end="")
            if result.returncode == 1:
                breaking.append(str(package))
                print(f"kabigate: WARNING: installed modules will not load on {package} (above)")
            elif result.returncode != 0:
                said = result.stderr.strip().splitlines()
                unjudged.append(f"{package}: {said[-1] if said else f'exit status {result.returncode}'}")
        for what in unjudged:
            print(f"kabigate: WARNING: could not judge {what}")
        if self.strict and breaking:
            raise Error(f"kabigate preflight: installed modules will not load on {', '.join(breaking)}")
        if self.strict and unjudged:
            raise Error(f"kabigate preflight: could not judge {'; '.join(unjudged)} (strict = 1: stopping)")
