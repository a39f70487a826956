"""Where nbserve keeps its state, and the environment every process it runs gets.

Importing this module sets the privacy defaults BentoML needs before it is imported
anywhere in the process (it sends usage data otherwise, and resolves packages online
when it builds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Before any `import bentoml`: BentoML reads these at import time.
_PRIVATE_DEFAULTS = {
    "BENTOML_DO_NOT_TRACK": "true",
    "UV_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",  # the Ray engine's driver and anything it starts
}
for _key, _value in _PRIVATE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


def private_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours, with the privacy defaults forced on."""
    env = dict(os.environ)
    env.update(_PRIVATE_DEFAULTS)
    env["BENTOML_DO_NOT_TRACK"] = "true"
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class Home:
    """The layout of ``NBSERVE_HOME`` (default ``~/.nbserve``); the agent owns it."""

    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None) -> "Home":
        raw = root or os.environ.get("NBSERVE_HOME") or Path.home() / ".nbserve"
        return cls(Path(raw).expanduser().resolve())

    @property
    def registry(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def agent_file(self) -> Path:
        """Address and PID of the running agent, written by the agent once it listens."""
        return self.root / "agent.json"

    @property
    def metrics(self) -> Path:
        """Latency panes, sampled requests and process resources: the monitor's own file."""
        return self.root / "metrics.sqlite"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def targets_file(self) -> Path:
        """Remote agents this machine deploys to (``nbserve target add``)."""
        return self.root / "targets.json"

    @property
    def tls_dir(self) -> Path:
        """Where ``nbserve agent init-tls`` writes the host's certificate and key by default."""
        return self.root / "tls"

    @property
    def lock_file(self) -> Path:
        return self.root / "agent.lock"

    @property
    def bentoml_home(self) -> Path:
        """The agent's own BentoML store: imported, immutable Bentos."""
        return self.root / "bentoml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def agent_log(self) -> Path:
        return self.logs / "agent.log"

    @property
    def staging(self) -> Path:
        """Archives on their way in; nothing here is trusted until imported."""
        return self.root / "staging"

    def version_log(self, name: str, version: int) -> Path:
        return self.logs / name / f"v{version}.log"

    def ensure(self) -> "Home":
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in (self.logs, self.staging, self.bentoml_home):
            path.mkdir(parents=True, exist_ok=True)
        return self
