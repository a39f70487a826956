"""A remote agent on another host, over TLS, with tokens: the same code as the local one.

"Another host" is a network namespace with its own veth pair and addresses when this
machine lets the test make one (root, `ip netns`), else a second loopback address. The
agent there is a real `nbserve agent run --tls-cert ... --tls-key ...` process; the client
side deploys to it through a named target with a pinned fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

import nbserve
from nbserve import _admin, errors
from nbserve._config import Home
from nbserve._targets import Target
from nbserve._tls import format_fingerprint, make_self_signed, pinned_context

from .conftest import _forget_clients, assert_no_leftovers, nbserve_home

pytestmark = pytest.mark.slow


@dataclass
class Host:
    address: str
    prefix: list[str]  # run a command "on the host"
    isolated: bool  # a real network namespace (else a second loopback address)


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    ns = f"nbs{os.getpid() % 100000}"
    outside, inside = f"vnb{os.getpid() % 100000}a", f"vnb{os.getpid() % 100000}b"
    octet = 16 + os.getpid() % 200
    try:
        if not shutil.which("ip"):
            raise OSError("no ip command")
        _sh("ip", "netns", "add", ns)
    except (OSError, subprocess.CalledProcessError):
        yield Host("127.0.0.2", [], isolated=False)
        return
    try:
        _sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _sh("ip", "link", "set", inside, "netns", ns)
        _sh("ip", "addr", "add", f"10.231.{octet}.1/30", "dev", outside)
        _sh("ip", "link", "set", outside, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.231.{octet}.2/30", "dev", inside)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")  # the model servers listen there
        yield Host(f"10.231.{octet}.2", ["ip", "netns", "exec", ns], isolated=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)


@dataclass
class RemoteAgent:
    home: Home
    url: str
    cert: Path
    fingerprint: str
    host: Host
    log: Path
    port: int
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.home.agent_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBSERVE_")}
        env["BENTOML_DO_NOT_TRACK"] = "true"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.host.prefix, sys.executable, "-m", "nbserve", "agent", "run", "--home", str(self.home.root),
                 "--host", self.host.address, "--port", str(self.port), "--tls-cert", str(self.cert),
                 "--tls-key", str(self.cert.with_suffix(".key"))],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.home.agent_file.exists():
                self.url = json.loads(self.home.agent_file.read_text())["url"]
                return
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError("the remote agent did not start:\n" + self.log.read_text()[-3000:])

    @property
    def pid(self) -> int:
        return json.loads(self.home.agent_file.read_text())["pid"]

    def kill(self) -> None:
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(timeout=10) if psutil.pid_exists(pid) else None
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.home.agent_file.exists():
            os.kill(self.pid, signal.SIGTERM)
        if self.proc is not None:
            self.proc.wait(timeout=90)


def _free_port(host: Host) -> int:
    """A fixed port, so the target's URL stays valid across the agent's restart."""
    if host.isolated:
        return 8443  # the namespace has nothing else listening
    import socket

    with socket.socket() as sock:
        sock.bind((host.address, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def remote(host: Host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAgent]:
    root = tmp_path_factory.mktemp("remote")
    home = Home.resolve(root / "home").ensure()
    cert = root / "tls" / "agent.crt"
    fingerprint = make_self_signed(cert, cert.with_suffix(".key"), [host.address])
    agent = RemoteAgent(home, "", cert, fingerprint, host, root / "agent.log", _free_port(host))
    agent.start()
    yield agent
    agent.stop()
    assert_no_leftovers(home)


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory, remote: RemoteAgent) -> Iterator[Path]:
    """The client side: its own NBSERVE_HOME (no local agent is ever started) and token files."""
    root = tmp_path_factory.mktemp("laptop")
    with nbserve_home(root / "home"):
        # The serving host's admin (owner token) makes a deployer token for the data scientist.
        admin_file = root / "admin.token"
        admin_file.write_text(remote.home.token_file.read_text())
        _admin.add_target(Target("prod-admin", remote.url, str(admin_file), fingerprint=remote.fingerprint))
        secret = _admin.create_token("alice", "deployer", target="prod-admin")["token"]
        (root / "alice.token").write_text(secret)
        yield root
    assert not Home.resolve(root / "home").agent_file.exists(), "no local agent may have been started"


def test_agent_refuses_to_listen_beyond_loopback_without_tls(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nbserve", "agent", "run", "--home", str(tmp_path / "h"),
                             "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without TLS" in result.stderr and "--insecure" in result.stderr
    assert not (tmp_path / "h" / "agent.json").exists()


def test_targets_verify_the_certificate_before_sending_anything(remote: RemoteAgent, laptop: Path, tmp_path):
    token_file = laptop / "alice.token"
    wrong = "AA:" * 31 + "AA"
    with pytest.raises(errors.TLSVerificationFailed, match="not the pinned"):
        _admin.add_target(Target("evil", remote.url, str(token_file), fingerprint=wrong))
    assert "evil" not in {t.name for t in _admin.list_targets()}  # a failed add saves nothing
    # plain http is refused unless asked for by name
    with pytest.raises(errors.InvalidArgument, match="plain HTTP"):
        _admin.add_target(Target("plain", remote.url.replace("https", "http"), str(token_file)))
    # the system's CAs do not know a self-signed agent: a clear error, no downgrade
    _admin.add_target(Target("unpinned", remote.url, str(token_file)), verify=False)
    with pytest.raises(errors.TLSVerificationFailed):
        nbserve.deployments(target="unpinned")
    _admin.remove_target("unpinned")
    # an agent whose certificate changed after it was pinned (same URL, new pair): refused
    other = tmp_path / "other.crt"
    make_self_signed(other, other.with_suffix(".key"), [remote.host.address])
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{remote.url}/v1/health", verify=pinned_context(other.read_text()), trust_env=False)
    # the right pin, and a wrong token: 401 before the target is saved
    bad = tmp_path / "bad.token"
    bad.write_text("nbs_0123456789ab_not-the-secret")
    with pytest.raises(errors.AuthenticationFailed):
        _admin.add_target(Target("badtoken", remote.url, str(bad), fingerprint=format_fingerprint(remote.fingerprint)))
    who = _admin.add_target(Target("prod", remote.url, str(token_file), fingerprint=remote.fingerprint))
    assert who == {"name": "alice", "role": "deployer", "deployments": None}


def test_deploy_predict_revoke_restart_over_tls(remote: RemoteAgent, laptop: Path, iris, forest, tree):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "churn", X_test, target="prod", progress=False)
    assert dep.url.startswith(f"https://{remote.host.address}:")
    # the data scientist's deployer token may predict; a dedicated app token is the usual way
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
    app_token = _admin.create_token("churn-app", "predict", deployments=["churn"], target="prod-admin")["token"]
    viewer = _admin.create_token("dashboards", "viewer", target="prod-admin")["token"]
    tls = pinned_context(remote.cert.read_text())
    body = {"data": X_test.head(5).to_dict(orient="records")}

    def predict(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"{dep.url}/predict", json=body, headers=headers, verify=tls, trust_env=False, timeout=30)

    assert predict(None).status_code == 401  # a remote agent's stable URLs need a token by default
    r = predict(viewer)
    assert r.status_code == 403 and r.json()["type"] == "PermissionDenied"
    r = predict(app_token)
    assert r.status_code == 200
    np.testing.assert_array_equal(r.json(), forest.predict(X_test.head(5)))
    # the other wire formats pass the same token check (docs/protocols.md)
    mlflow = {"dataframe_records": body["data"]}
    for token, status in ((None, 401), (viewer, 403), (app_token, 200)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.post(f"{dep.url}/invocations", json=mlflow, headers=headers, verify=tls, trust_env=False, timeout=30)
        assert r.status_code == status, (token, r.text)
    assert r.json() == {"predictions": forest.predict(X_test.head(5)).tolist()}
    # a viewer may look but not deploy
    (laptop / "viewer.token").write_text(viewer)
    _admin.add_target(Target("prod-ro", remote.url, str(laptop / "viewer.token"), fingerprint=remote.fingerprint))
    assert [d.name for d in nbserve.deployments(target="prod-ro")] == ["churn"]
    with pytest.raises(errors.PermissionDenied):
        nbserve.deploy(tree, "churn", X_test, target="prod-ro", progress=False)
    with pytest.raises(errors.PermissionDenied):
        nbserve.get("churn", target="prod-ro").rollback()
    # a second version, from the magic as a notebook would, then the token is revoked mid-way
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "nbserve")
        shell.user_ns.update(model=tree, X_test=X_test)
        dep2 = shell.run_line_magic("deploy", "model --name churn --sample X_test --target prod")
    finally:
        InteractiveShell.clear_instance()
    assert dep2.version == 2
    assert predict(app_token).status_code == 200
    _admin.revoke_token("churn-app", target="prod-admin")
    assert predict(app_token).status_code == 401

    # the serving host's agent is killed and started again: nothing is lost
    audit_before = _admin.audit(target="prod-admin", limit=10_000)
    remote.kill()
    remote.start()
    _forget_clients()
    again = nbserve.get("churn", target="prod")
    deadline = time.monotonic() + 60
    while again.refresh().status != "serving" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert again.version == 2 and [v["number"] for v in again.versions] == [1, 2]
    np.testing.assert_array_equal(again.predict(X_test), tree.predict(X_test))
    audit_after = _admin.audit(target="prod-admin", limit=10_000)
    assert audit_after.loc[audit_before.index].equals(audit_before)  # every record survived unchanged
    check = _admin.verify_audit(target="prod-admin")
    assert check["ok"], check
    history = _admin.audit("churn", target="prod")
    deploys = history[history["action"] == "deployed"]
    assert list(deploys["actor"]) == ["alice", "alice"] and list(deploys["after"]) == [1, 2]
    assert deploys["source"].nunique() == 1
    if remote.host.isolated:
        assert deploys["source"].iloc[0].startswith("10.231.")  # the client's address, across the veth
    tokens = {t["name"]: t["state"] for t in _admin.list_tokens(all=True, target="prod-admin")}
    assert tokens["churn-app"] == "revoked" and tokens["alice"] == "active"
    assert predict(app_token).status_code == 401  # still revoked after the restart


def test_a_ca_signed_agent_is_verified_with_the_ca_file(tmp_path):
    """An organisation's CA instead of a pin: the chain and the host name are both checked."""
    import trustme

    ca, other_ca = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    home = Home.resolve(tmp_path / "home").ensure()
    agent = RemoteAgent(home, "", cert, "", Host("127.0.0.1", [], isolated=False), tmp_path / "agent.log",
                        _free_port(Host("127.0.0.1", [], isolated=False)))
    with nbserve_home(tmp_path / "laptop"):
        agent.start()
        try:
            token = home.token_file
            ok = _admin.add_target(Target("corp", agent.url, str(token), ca_file=str(tmp_path / "ca.pem")))
            assert ok["role"] == "admin"
            with pytest.raises(errors.TLSVerificationFailed):
                _admin.add_target(Target("corp-bad", agent.url, str(token), ca_file=str(tmp_path / "other-ca.pem")))
            by_name = agent.url.replace("127.0.0.1", "localhost")  # the certificate names 127.0.0.1 only
            with pytest.raises(errors.TLSVerificationFailed):
                _admin.add_target(Target("corp-name", by_name, str(token), ca_file=str(tmp_path / "ca.pem")))
            assert [t.name for t in _admin.list_targets()] == ["corp"]
        finally:
            agent.stop()
    assert_no_leftovers(home)


def test_hostile_uploads_are_refused_and_the_live_version_keeps_serving(remote: RemoteAgent, laptop: Path, iris,
                                                                       tree, tmp_path):
    import hashlib
    import io
    import tarfile

    from nbserve._api import connect

    _, X_test, _, _ = iris
    client = connect("prod")
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:xz") as tar:  # what export_bento writes
        info = tarfile.TarInfo("../../escaped")
        data = b"owned"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    payload = evil.getvalue()
    headers = {"content-type": "application/octet-stream", "x-nbserve-sha256": hashlib.sha256(payload).hexdigest()}
    with pytest.raises(errors.InvalidArchive, match="escaped"):
        client.upload("/v1/uploads", iter([payload]), headers={**headers, "content-length": str(len(payload))},
                      timeout=30)
    with pytest.raises(errors.InvalidArchive):  # wrong digest
        client.upload("/v1/uploads", iter([payload]), timeout=30,
                      headers={**headers, "content-length": str(len(payload)), "x-nbserve-sha256": "0" * 64})
    with pytest.raises(errors.UnsupportedMediaType):
        client.upload("/v1/uploads", iter([payload]), timeout=30,
                      headers={**headers, "content-length": str(len(payload)), "content-type": "text/plain"})
    assert not (remote.home.root.parent / "escaped").exists()
    assert list((remote.home.staging / "uploads").iterdir()) == []
    dep = nbserve.get("churn", target="prod")
    np.testing.assert_array_equal(dep.predict(X_test), tree.predict(X_test))
    assert dep.version == 2


def test_init_tls_writes_a_private_key_and_prints_the_fingerprint(tmp_path):
    import hashlib
    import ssl

    result = subprocess.run([sys.executable, "-m", "nbserve", "agent", "init-tls", "--home", str(tmp_path),
                             "--tls-host", "serving.example", "--tls-host", "10.0.0.12"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    cert, key = tmp_path / "tls" / "agent.crt", tmp_path / "tls" / "agent.key"
    assert key.stat().st_mode & 0o777 == 0o600
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert format_fingerprint(hashlib.sha256(der).hexdigest()) in result.stdout
    again = subprocess.run([sys.executable, "-m", "nbserve", "agent", "init-tls", "--home", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "--force" in again.stderr  # never overwrites a pinned pair silently
