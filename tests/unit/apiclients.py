"""Test clients of the real app, one per user, each with an API token of its own."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from virtkit import Client


def token_clients(
    client: Client, app: FastAPI, users: Iterable[tuple[str, str]]
) -> dict[str, TestClient]:
    """Add each ``(user, role)`` (password ``password-<user>``) and give back a TestClient per
    user that sends that user's new token."""
    clients = {}
    for user, role in users:
        client.users.add(user, role, "password-" + user)
        _, secret = client.users.create_token(user, "test", None)
        clients[user] = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    return clients
