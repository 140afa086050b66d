"""The production environment documented in deploy/meepo.env.example passes `check --deploy`."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from meepo.testing import demo_rows, write_catalogue

ROOT = Path(__file__).resolve().parents[2]


def documented_environment() -> dict:
    lines = (ROOT / "deploy" / "meepo.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.mark.slow
def test_the_documented_production_settings_pass_check_deploy_without_warnings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEEPO_") and k != "DATABASE_URL"}
    env.update(documented_environment())
    env.update(
        # What the README tells the operator to fill in, and a database this test can create.
        MEEPO_SECRET_KEY=secrets.token_urlsafe(50),
        MEEPO_DATA_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'meepo.sqlite3'}",
        MEEPO_CLIP_MODEL="meepo-tiny",
    )

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)

    assert manage("migrate", "-v0").returncode == 0
    assert manage("import_catalog", str(write_catalogue(tmp_path / "source", demo_rows(3)))).returncode == 0
    assert manage("embed_catalog").returncode == 0
    checked = manage("check", "--deploy", "--fail-level", "WARNING")
    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout


@pytest.mark.slow
def test_check_deploy_flags_the_development_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEEPO_") and k != "DATABASE_URL"}
    env.update(MEEPO_DATA_DIR=str(tmp_path / "var"), MEEPO_CLIP_MODEL="meepo-tiny")
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert checked.returncode != 0
    for problem in ("security.W009", "security.W004", "security.W008", "security.W012", "security.W016"):
        assert problem in checked.stderr


def test_the_photo_form_is_refused_without_its_csrf_token(db, small_catalogue):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/search/photo", {"url": "https://example.com/photo.jpg"})
    assert response.status_code == 403


def test_the_admin_is_for_staff_only(client, django_user_model, small_catalogue):
    assert client.get("/admin/catalog/item/").status_code == 302
    shopper = django_user_model.objects.create_user("shopper", password="a-long-password-1")
    client.force_login(shopper)
    response = client.get("/admin/catalog/item/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.post("/admin/catalog/item/1/delete/", {"post": "yes"}).status_code == 302
    assert len(small_catalogue) == 8 and small_catalogue[0].__class__.objects.count() == 8
