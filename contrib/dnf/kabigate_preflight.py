"""dnf (4) plugin: before a transaction installs a kernel, run `kabigate preflight` on its
kernel-core package (which carries symvers.gz) and warn about the installed out-of-tree modules
that will not load on it. Copy to the dnf plugin folder (e.g. /usr/lib/python3.9/site-packages/
dnf-plugins/) with contrib/dnf/kabigate_preflight.conf in /etc/dnf/plugins/. With `strict = 1` in
the conf, such a kernel stops the transaction."""

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
        breaking = []
        for package in self.base.transaction.install_set:
            if package.name not in ("kernel-core", "kernel-rt-core", "kernel-64k-core"):
                continue
            # The modules judged are those of the system dnf installs into (--installroot).
            argv = [self.command, "preflight", "--root", self.base.conf.installroot, package.localPkg()]
            result = subprocess.run(argv, check=False, capture_output=True, text=True)
            if result.stdout:
                print(result.stdout, end="")
            if result.returncode == 1:
                breaking.append(str(package))
                print(f"kabigate: WARNING: installed modules will not load on {package} (above)")
            elif result.returncode != 0:
                print(f"kabigate: could not judge {package}: {result.stderr.strip()}")
        if breaking and self.strict:
            raise Error(f"kabigate preflight: installed modules will not load on {', '.join(breaking)}")
