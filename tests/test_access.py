"""Tokens, roles, predict tokens on stable URLs, and the hash-chained audit log, against a
real agent (real HTTP, real SQLite, real BentoML servers)."""

from __future__ import annotations

import sqlite3
import time

import httpx
import numpy as np
import pytest

import nbserve
from nbserve import _admin, errors
from nbserve._local import find_agent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(forest, "iris", X_test, progress=False)
    nbserve.deploy(tree, "iris", X_test, progress=False)  # v2 (tree) is live
    nbserve.deploy(forest, "other", X_test, progress=False)
    info = find_agent(module_home)
    assert info is not None
    return info


def _call(agent, method: str, path: str, token: str | None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, f"{agent.url}{path}", headers=headers, trust_env=False, timeout=30, **kwargs)


def _token(role: str, name: str, **kwargs) -> str:
    return _admin.create_token(name, role, **kwargs)["token"]


def test_each_role_may_do_what_it_names_and_gets_a_json_403_otherwise(agent):
    viewer, deployer, predictor = _token("viewer", "ro"), _token("deployer", "ci"), _token("predict", "app")
    admin = _token("admin", "ops")
    # viewer: reads, never changes
    assert _call(agent, "GET", "/v1/deployments", viewer).status_code == 200
    assert _call(agent, "GET", "/v1/deployments/iris/latency", viewer).status_code == 200
    for method, path, body in [("POST", "/v1/deployments/iris/rollback", {}),
                               ("PATCH", "/v1/deployments/iris/config", {"settings": {"sample_rate": 0.5}}),
                               ("POST", "/v1/tokens", {"name": "x", "role": "admin"})]:
        r = _call(agent, method, path, viewer, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["type"] == "PermissionDenied"
    # predict: not even a read of the API
    r = _call(agent, "GET", "/v1/deployments", predictor)
    assert r.status_code == 403 and "predict" in r.json()["error"]["message"]
    # deployer: changes deployments, not tokens
    r = _call(agent, "PATCH", "/v1/deployments/iris/config", deployer, json={"settings": {"sample_rate": 0.5}})
    assert r.status_code == 200, r.text
    assert _call(agent, "GET", "/v1/tokens", deployer).status_code == 403
    # admin: tokens; and the agent's shutdown is admin-only
    assert _call(agent, "GET", "/v1/tokens", admin).status_code == 200
    assert _call(agent, "POST", "/v1/agent/shutdown", deployer).status_code == 403


def test_missing_wrong_revoked_and_expired_tokens_get_401_json(agent):
    for token in (None, "nope", "nbs_000000000000_wrong"):
        r = _call(agent, "GET", "/v1/deployments", token)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "AuthenticationFailed"
    live = _token("viewer", "short-lived", expires=1.0)
    assert _call(agent, "GET", "/v1/deployments", live).status_code == 200
    time.sleep(1.2)
    r = _call(agent, "GET", "/v1/deployments", live)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    gone = _token("viewer", "to-revoke")
    assert _call(agent, "GET", "/v1/deployments", gone).status_code == 200
    _admin.revoke_token("to-revoke")
    r = _call(agent, "GET", "/v1/deployments", gone)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_a_scoped_token_sees_nothing_of_other_deployments(agent):
    scoped = _token("viewer", "iris-only", deployments=["iris"])
    names = [d["name"] for d in _call(agent, "GET", "/v1/deployments", scoped).json()]
    assert names == ["iris"]
    events = _call(agent, "GET", "/v1/events", scoped).json()
    assert events and {e["deployment"] for e in events} == {"iris"}
    audit = _call(agent, "GET", "/v1/audit", scoped).json()
    assert audit and {a["deployment"] for a in audit} == {"iris"}
    # another deployment, and one that does not exist, answer the same 403: existence does not leak
    for name in ("other", "no-such-deployment"):
        r = _call(agent, "GET", f"/v1/deployments/{name}", scoped)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"] == f"the token 'iris-only' may not act on {name!r}"
    assert _call(agent, "GET", "/v1/schedules", scoped).status_code == 403


def test_state_is_a_whole_poll_in_one_request_and_a_scoped_token_sees_only_its_own(agent, iris):
    from nbserve._schedules import get_schedule, schedule

    from .conftest import repo_root

    _, X_test, _, _ = iris
    nbserve.get("iris").predict(X_test[:3])
    schedule(repo_root() / "notebooks" / "03-scheduled-retrain.ipynb", cron="0 3 * * *", name="other")
    try:
        r = _call(agent, "GET", "/v1/state", agent.token)
        assert r.status_code == 200, r.text
        state = r.json()
        by_name = {d["name"]: d for d in state["deployments"]}
        assert set(by_name) == {"iris", "other"}
        iris_ = by_name["iris"]
        deployments = {d["name"]: d for d in _call(agent, "GET", "/v1/deployments", agent.token).json()}
        for name, brief in by_name.items():  # the same facts as the per-deployment routes
            full = deployments[name]
            assert (brief["status"], brief["live_version"], brief["url"], brief["aliases"]) == (
                full["status"], full["live_version"], full["url"], full["aliases"])
            assert brief["versions"] == [{"number": v["number"], "status": v["status"]} for v in full["versions"]]
            assert brief["rollout"] is None
            events = _call(agent, "GET", f"/v1/deployments/{name}/events?limit=1", agent.token).json()
            assert brief["latest_event_id"] == events[-1]["id"]
            assert brief["resources"]["deployment"] == name and brief["resources"]["servers"] >= 1
        assert iris_["live_version"] == 2 and {v["number"] for v in iris_["versions"]} == {1, 2}
        assert iris_["summary"]["requests"] >= 1 and set(iris_["summary"]["drift"]) >= {"drifted", "features"}
        assert {"metric", "value", "labelled"} <= set(iris_["summary"]["quality"])
        (sched,) = [s for s in state["schedules"] if s["name"] == "other"]
        assert sched["deployment"] == "other" and sched["cron"] == "0 3 * * *"
        assert sched["last_run"] is None and sched["running_run"] is None and sched["next_run_at"]

        scoped = _token("viewer", "iris-state", deployments=["iris"])
        r = _call(agent, "GET", "/v1/state", scoped)
        assert r.status_code == 200, r.text
        mine = r.json()
        assert [d["name"] for d in mine["deployments"]] == ["iris"]
        assert mine["deployments"][0]["live_version"] == 2
        assert mine["schedules"] == []  # GET /v1/schedules is not for it either
        r = _call(agent, "GET", "/v1/state", _token("predict", "state-app"))
        assert r.status_code == 403 and r.json()["error"]["type"] == "PermissionDenied"
        assert _call(agent, "GET", "/v1/state", None).status_code == 401
    finally:
        get_schedule("other").remove()


def test_tokens_are_stored_only_as_salted_hashes(agent, module_home):
    secret = _token("deployer", "hashed")
    listed = _admin.list_tokens()
    assert all("token" not in t and "digest" not in t and "salt" not in t for t in listed)
    raw = module_home.registry.read_bytes() + module_home.registry.with_name("registry.sqlite-wal").read_bytes()
    _, token_id, body = secret.split("_", 2)
    assert body.encode() not in raw and token_id.encode() in raw
    with sqlite3.connect(module_home.registry) as db:
        salts = [row[0] for row in db.execute("SELECT salt FROM tokens")]
    assert len(set(salts)) == len(salts) >= 2  # one salt per token


def test_rotation_with_grace_keeps_the_old_secret_briefly(agent):
    old = _token("viewer", "rotating")
    new = _admin.rotate_token("rotating", grace=1.5)["token"]
    assert new != old
    assert _call(agent, "GET", "/v1/deployments", old).status_code == 200
    assert _call(agent, "GET", "/v1/deployments", new).status_code == 200
    time.sleep(1.7)
    assert _call(agent, "GET", "/v1/deployments", old).status_code == 401
    assert _call(agent, "GET", "/v1/deployments", new).status_code == 200
    now = _admin.rotate_token("rotating")["token"]  # no grace: the previous one stops at once
    assert _call(agent, "GET", "/v1/deployments", new).status_code == 401
    assert _call(agent, "GET", "/v1/deployments", now).status_code == 200


def test_stable_url_needs_a_predict_token_when_configured(agent, iris, tree):
    _, X_test, _, _ = iris
    dep = nbserve.get("iris")
    body = {"data": X_test.head(3).to_dict(orient="records")}
    assert httpx.post(f"{dep.url}/predict", json=body, trust_env=False).status_code == 200  # local default: open
    dep.configure(predict_auth="token")
    predictor = _token("predict", "iris-app", deployments=["iris"])
    viewer = _token("viewer", "looker")

    def post(token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"{dep.url}/predict", json=body, headers=headers, trust_env=False)

    r = post(None)
    assert r.status_code == 401 and r.json()["type"] == "AuthenticationFailed"
    r = post(viewer)
    assert r.status_code == 403 and r.json()["type"] == "PermissionDenied"
    r = post(predictor)
    assert r.status_code == 200
    np.testing.assert_array_equal(r.json(), tree.predict(X_test.head(3)))
    other = nbserve.get("other")
    other.configure(predict_auth="token")
    r = httpx.post(f"{other.url}/predict", json=body, headers={"Authorization": f"Bearer {predictor}"},
                   trust_env=False)
    assert r.status_code == 403  # limited to iris
    np.testing.assert_array_equal(dep.predict(X_test.head(3)), tree.predict(X_test.head(3)))  # owner may
    _admin.revoke_token("iris-app")
    assert post(predictor).status_code == 401  # at once
    summary = dep.summary("5m")
    assert summary["requests"] >= 5  # refused requests are counted too
    dep.configure(predict_auth=None)
    other.configure(predict_auth=None)
    assert post(None).status_code == 200


def test_audit_records_who_what_when_from_where_and_the_live_versions(agent):
    deployer = _token("deployer", "release-bot")
    r = _call(agent, "POST", "/v1/deployments/iris/rollback", deployer, json={"actor": "mallory"})
    assert r.status_code == 200, r.text
    frame = _admin.audit("iris")
    last = frame.iloc[-1]
    assert last["action"] == "rollback"
    assert last["actor"] == "release-bot"  # a named token is recorded as itself, whatever it claims
    assert last["token"] == "release-bot" and last["source"] == "127.0.0.1"
    assert (last["before"], last["after"]) == (2, 1)
    actions = list(frame["action"])
    assert actions[:3] == ["deployment_created", "version_registered", "deployed"]
    assert "configured" in actions
    tokens = _admin.audit()
    assert {"token_created", "token_revoked", "token_rotated"} <= set(tokens["action"])
    check = _admin.verify_audit()
    assert check["ok"] and check["records"] == len(_admin.audit(limit=10_000))


def test_editing_or_deleting_an_audit_record_is_evident(agent, module_home):
    assert _admin.verify_audit()["ok"]
    # Someone with the file and the sqlite3 shell: the triggers stop a plain UPDATE...
    with sqlite3.connect(module_home.registry) as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit SET actor = 'nobody' WHERE seq = 2")
    # ...so they drop them first. The chain still gives it away.
    with sqlite3.connect(module_home.registry) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET actor = 'nobody' WHERE seq = 2")
    check = _admin.verify_audit()
    assert not check["ok"] and check["broken_at"] == 2 and "changed" in check["problem"]
    with sqlite3.connect(module_home.registry) as db:
        db.execute("DROP TRIGGER audit_no_delete")
        db.execute("DELETE FROM audit WHERE seq = 2")
    check = _admin.verify_audit()
    assert not check["ok"] and check["broken_at"] == 3 and "missing" in check["problem"]


def test_cli_token_and_audit_commands(agent, capsys):
    from nbserve._cli import main

    assert main(["token", "create", "cli-made", "--role", "viewer", "--expires", "1d"]) == 0
    out = capsys.readouterr().out
    secret = out.splitlines()[0]
    assert secret.startswith("nbs_") and "shown once" in out
    assert main(["token", "list"]) == 0
    assert "cli-made" in capsys.readouterr().out
    assert main(["token", "revoke", "cli-made"]) == 0
    assert main(["token", "revoke", "cli-made"]) == 1
    assert "no active token" in capsys.readouterr().err
    assert main(["audit", "iris", "--limit", "5"]) == 0
    assert "rollback" in capsys.readouterr().out
    with pytest.raises(errors.InvalidArgument):
        _admin.create_token("bad name!", "viewer")


def test_bad_uploads_and_slow_clients_get_4xx_and_leave_nothing(fresh_home, monkeypatch):
    import hashlib
    import socket

    from nbserve._api import connect

    monkeypatch.setenv("NBSERVE_UPLOAD_IDLE_SECONDS", "1")  # the agent started below inherits it
    client = connect()
    url = httpx.URL(client.base_url)
    auth = client.auth_headers
    body = b"x" * 1000
    digest = hashlib.sha256(body).hexdigest()

    def upload(headers: dict[str, str], content: bytes = body) -> httpx.Response:
        return httpx.post(f"{client.base_url}/v1/uploads", content=content, trust_env=False,
                          headers={**auth, "content-type": "application/octet-stream",
                                   "x-nbserve-sha256": digest, **headers})

    r = upload({"content-type": "application/json"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "UnsupportedMediaType"
    r = httpx.post(f"{client.base_url}/v1/uploads", content=iter([body]), trust_env=False,
                   headers={**auth, "content-type": "application/octet-stream", "x-nbserve-sha256": digest})
    assert r.status_code == 411  # chunked: no Content-Length
    r = upload({"x-nbserve-sha256": "0" * 64})
    assert r.status_code == 400 and "sha-256 does not match" in r.json()["error"]["message"].lower()
    r = upload({"x-nbserve-sha256": "not-a-digest"})
    assert r.status_code == 400
    r = upload({})  # right size and digest, but not a tar archive
    assert r.status_code == 400 and r.json()["error"]["type"] == "InvalidArchive"
    r = httpx.post(f"{client.base_url}/v1/deployments/x/rollback", content=b"{" + b" " * (2 << 20) + b"}",
                   headers={**auth, "content-type": "application/json"}, trust_env=False)
    assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
    # A client that announces 1000 bytes, sends 10 and stalls: dropped after the idle limit.
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        head = (f"POST /v1/uploads HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: {auth['Authorization']}\r\n"
                f"Content-Type: application/octet-stream\r\nX-Nbserve-Sha256: {digest}\r\n"
                "Content-Length: 1000\r\n\r\n").encode()
        sock.sendall(head + body[:10])
        started = time.monotonic()
        answer = ""
        while "\r\n\r\n" not in answer or len(answer.split("\r\n\r\n", 1)[1]) < _content_length(answer):
            chunk = sock.recv(65536).decode()  # the head and the body may come in two segments
            if not chunk:
                break
            answer += chunk
        assert time.monotonic() - started < 20
    assert answer.startswith("HTTP/1.1 400") and "stalled" in answer
    # ... and the agent still answers everyone else, with nothing left in staging
    assert client.get("/v1/health")["status"] == "ok"
    assert list((fresh_home.staging / "uploads").iterdir()) == []


def test_a_large_upload_shows_a_progress_bar_and_is_accepted(fresh_home, tmp_path, capfd):
    """A 12 MiB archive (a bento.yaml and incompressible data, as export_bento lays it out)
    streams with a progress bar and passes the agent's checks; nothing is deployed."""
    import io
    import os
    import tarfile

    from nbserve._api import connect, upload_archive

    archive = tmp_path / "big.bento"
    with tarfile.open(archive, "w:xz", preset=0) as tar:
        for name, data in (("bento.yaml", b"service: x\n"), ("src/blob.bin", os.urandom(12 * 2**20))):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    upload_id = upload_archive(connect(), archive, progress=True)
    assert len(upload_id) == 32
    err = capfd.readouterr().err
    assert "uploading big.bento" in err and "100%" in err
    staged = list((fresh_home.staging / "uploads").iterdir())
    assert [p.stat().st_size for p in staged] == [archive.stat().st_size]


def _content_length(response: str) -> int:
    for line in response.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value)
    return 0
