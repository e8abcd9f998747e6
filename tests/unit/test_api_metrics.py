"""``GET /metrics`` of ``virtkit serve`` on libvirt's test driver: who may scrape, and what
the text holds (the test driver's own running domain ``test``)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.apiclients import token_clients
from virtkit import Client, Settings
from virtkit.api.app import create_app


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        uri="test:///default",
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        console_log_dir=tmp_path / "logs",
        storage_pool_path=tmp_path / "images",
        **extra,  # type: ignore[arg-type]
    )


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_metrics_need_a_token_and_say_what_the_host_runs(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    client = Client(settings=settings)
    app = create_app(settings, client=client)
    clients = token_clients(client, app, [("vera", "viewer")])
    with TestClient(app) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
    with clients["vera"] as vera:
        answer = vera.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = _samples(answer.text)
        assert samples["libvirt_up"][0][1] == 1
        states = {
            labels["domain"]: labels["state"] for labels, _ in samples["virtkit_domain_state"]
        }
        assert states["test"] == "running"  # the test driver's own domain
        zipped = vera.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert zipped.status_code == 200
        assert "virtkit_domain_state" in zipped.text  # the client unzipped what was gzip
        assert zipped.headers.get("content-encoding") == "gzip"
    client.close()


def test_metrics_public_answers_without_a_token(tmp_path: Path) -> None:
    settings = _settings(tmp_path, metrics_public=True)
    client = Client(settings=settings)
    app = create_app(settings, client=client)
    with TestClient(app) as anonymous:
        answer = anonymous.get("/metrics")
        assert answer.status_code == 200
        assert "libvirt_up" in answer.text
    client.close()
