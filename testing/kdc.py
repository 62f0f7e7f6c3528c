"""A real MIT Kerberos KDC for tests: its own realm, files and database, on a free port.

    kdc = MitKdc(tmp_path / "kdc").start()          # kdb5_util create -s, then krb5kdc -n
    kdc.add_principal("sccm-svc", password="...")   # kadmin.local
    kdc.add_principal("HTTP/localhost")              # a service: random key
    kdc.keytab(tmp_path / "http.keytab", "HTTP/localhost")
    env = kdc.environment()                          # KRB5_CONFIG, KRB5_KDC_PROFILE for children
    kdc.stop()                                       # by PID

Nothing on the machine is read or written: `krb5.conf` and `kdc.conf` live in the fixture's
folder and are named through KRB5_CONFIG / KRB5_KDC_PROFILE (set in this process too, since
libkrb5 reads them when a context is made), DNS is never asked (no SRV lookups, no
canonicalisation of host names), and the default ccache and keytabs point into the folder.
The KDC speaks TCP only (`udp_preference_limit = 1`), so a stopped KDC is "connection refused"
at once rather than UDP timeouts. Debian's packages: krb5-kdc, krb5-admin-server (kadmin.local).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from embedded.child_stop import stop_child

__all__ = ["FAKETIME_MISSING", "KDC_MISSING", "MitKdc", "find_faketime", "find_kdc_binaries", "kerberos_environment"]

KDC_MISSING: Final = (
    "the MIT Kerberos KDC is not installed (Debian, as root: "
    "apt-get install -y krb5-kdc krb5-admin-server krb5-user libkrb5-dev; then `make` adds the kerberos extra)"
)
FAKETIME_MISSING: Final = "libfaketime is not installed (Debian, as root: apt-get install -y faketime)"
_FAKETIME_DIRS: Final = (
    "/usr/lib/x86_64-linux-gnu/faketime",
    "/usr/lib/aarch64-linux-gnu/faketime",
    "/usr/lib/faketime",
)
_SBIN_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_BINARIES: Final = ("krb5kdc", "kdb5_util", "kadmin.local")
_START_TIMEOUT_S: Final = 15.0
_STOP_GRACE_S: Final = 5.0
_COMMAND_TIMEOUT_S: Final = 60.0


def find_kdc_binaries() -> dict[str, str] | None:
    """Paths of krb5kdc, kdb5_util and kadmin.local (sbin is often not on PATH), or None."""
    search_path = os.pathsep.join((os.environ.get("PATH", ""), *_SBIN_DIRS))
    found = {name: shutil.which(name, path=search_path) for name in _BINARIES}
    if any(path is None for path in found.values()):
        return None
    return {name: str(path) for name, path in found.items()}


def find_faketime() -> str | None:
    """libfaketime's preload library (Debian: faketime), or None."""
    for directory in _FAKETIME_DIRS:
        candidate = Path(directory) / "libfaketime.so.1"
        if candidate.is_file():
            return str(candidate)
    return None


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def kerberos_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set `env` in this process for the block (libkrb5 reads KRB5_* when it makes a context)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class MitKdc:
    """One realm's KDC in `workdir`: configuration, database, principals, keytabs, the krb5kdc process."""

    def __init__(
        self,
        workdir: Path,
        *,
        realm: str = "SCCM.TEST",
        max_ticket_life: str = "10h",
        max_renewable_life: str = "7d",
        clock_offset: str | None = None,
    ) -> None:
        """`clock_offset` (libfaketime's FAKETIME, e.g. "-10m") runs the KDC on a skewed clock."""
        binaries = find_kdc_binaries()
        if binaries is None:
            raise RuntimeError(KDC_MISSING)
        self._binaries = binaries
        self.workdir = workdir
        self.realm = realm
        self.port = 0
        self.max_ticket_life = max_ticket_life
        self.max_renewable_life = max_renewable_life
        self.krb5_conf = workdir / "krb5.conf"
        self.kdc_conf = workdir / "kdc.conf"
        self.log_file = workdir / "krb5kdc.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._created = False
        self._clock_env: dict[str, str] = {}
        if clock_offset is not None:
            library = find_faketime()
            if library is None:
                raise RuntimeError(FAKETIME_MISSING)
            self._clock_env = {"LD_PRELOAD": library, "FAKETIME": clock_offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    # -- configuration ----------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """What a child process (or this one) needs to use this realm and nothing else."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            # No keytab or ccache of the machine's is ever read by accident.
            "KRB5_KTNAME": f"FILE:{self.workdir / 'default.keytab'}",
            "KRB5_CLIENT_KTNAME": f"FILE:{self.workdir / 'default-client.keytab'}",
            "KRB5CCNAME": f"FILE:{self.workdir / 'default.ccache'}",
        }

    def _write_configuration(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        realm = self.realm
        self.krb5_conf.write_text(
            f"""[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    # A skewed client sees KRB_AP_ERR_SKEW, as a Windows client does, instead of silently adjusting.
    kdc_timesync = 0
    default_ccache_name = FILE:{self.workdir / "default.ccache"}
    default_keytab_name = FILE:{self.workdir / "default.keytab"}
    default_client_keytab_name = FILE:{self.workdir / "default-client.keytab"}
    forwardable = false
    ticket_lifetime = {self.max_ticket_life}
    renew_lifetime = {self.max_renewable_life}

[realms]
    {realm} = {{
        kdc = 127.0.0.1:{self.port}
        admin_server = 127.0.0.1:{self.port}
    }}

[domain_realm]
    localhost = {realm}
    .test = {realm}
""",
            encoding="utf-8",
        )
        self.kdc_conf.write_text(
            f"""[kdcdefaults]
    kdc_ports = {self.port}
    kdc_tcp_ports = {self.port}

[realms]
    {realm} = {{
        database_name = {self.workdir / "principal"}
        key_stash_file = {self.workdir / "stash"}
        acl_file = {self.workdir / "kadm5.acl"}
        max_life = {self.max_ticket_life}
        max_renewable_life = {self.max_renewable_life}
        kdc_ports = {self.port}
        kdc_tcp_ports = {self.port}
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}

[logging]
    kdc = FILE:{self.log_file}
    admin_server = FILE:{self.workdir / "kadmin.log"}
    default = FILE:{self.workdir / "krb5lib.log"}
""",
            encoding="utf-8",
        )
        (self.workdir / "kadm5.acl").write_text("", encoding="utf-8")

    def _run(self, binary: str, *args: str) -> str:
        env = {**os.environ, **self.environment()}
        result = subprocess.run(
            [self._binaries[binary], *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
        # kadmin.local answers 0 even when a query fails: its complaints go to stderr.
        if result.returncode != 0 or "error" in result.stderr.lower() or "cannot" in result.stderr.lower():
            raise RuntimeError(f"{binary} {args[0] if args else ''} failed: {result.stderr.strip()}")
        return result.stdout

    def kadmin(self, query: str) -> str:
        """Run one kadmin.local query against this realm's database."""
        return self._run("kadmin.local", "-r", self.realm, "-q", query)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> MitKdc:
        """Create the realm (once) and start krb5kdc in the foreground on a free port."""
        if self.process is not None:
            return self
        if not self._created:
            self.port = _free_tcp_port()
            self._write_configuration()
            master_password = secrets.token_urlsafe(24)
            self._run("kdb5_util", "-r", self.realm, "create", "-s", "-P", master_password)
            self._created = True
        self._spawn()
        return self

    def _spawn(self) -> None:
        env = {**os.environ, **self.environment(), **self._clock_env}
        log = self.log_file.with_suffix(".stderr").open("ab")
        try:
            # -n: stay in the foreground (so we own its PID); -r: only our realm.
            self.process = subprocess.Popen(
                [self._binaries["krb5kdc"], "-n", "-r", self.realm],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"krb5kdc exited at start ({self.process.returncode}); see {self.log_file}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"krb5kdc did not listen on port {self.port} within {_START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Stop krb5kdc by its PID (the realm's files stay: `start()` brings the same realm back)."""
        if self.process is not None:
            stop_child(self.process, grace_s=_STOP_GRACE_S)
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- principals and keytabs -------------------------------------------------------------------

    def principal(self, name: str) -> str:
        """`name` qualified with this realm."""
        return name if "@" in name else f"{name}@{self.realm}"

    def add_principal(self, name: str, *, password: str | None = None, max_life: str | None = None) -> str:
        """Create `name` with `password`, or with a random key when None (services); its full name.

        Accounts with a password require pre-authentication, as Active Directory's do by default
        (so the KDC checks the client's clock, and a wrong password is KDC_ERR_PREAUTH_FAILED).
        """
        full = self.principal(name)
        options = f'-maxlife "{max_life}" ' if max_life else ""
        if password is not None:
            options += "+requires_preauth "
        if password is None:
            self.kadmin(f"addprinc {options}-randkey {full}")
        else:
            if '"' in password or "\n" in password:
                raise ValueError("test passwords must not hold quotes or line breaks")
            self.kadmin(f'addprinc {options}-pw "{password}" {full}')
        return full

    def modify_principal(self, name: str, options: str) -> None:
        """`modprinc` with kadmin options, e.g. `-maxlife "20 seconds"` or `-pwexpire now`."""
        self.kadmin(f"modprinc {options} {self.principal(name)}")

    def keytab(self, path: Path, *names: str) -> Path:
        """Write the current keys of `names` to a new keytab at `path` (0600); keys stay as they are,
        so a principal with a password keeps it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for name in names:
            # -norandkey (kadmin.local only): export without changing the key.
            self.kadmin(f"ktadd -k {path} -norandkey {self.principal(name)}")
        path.chmod(0o600)
        return path
