"""No secret in what taskstream prints: store URLs are shown redacted (issue 26, item 5)."""

from __future__ import annotations

import pytest

from taskstream import App
from taskstream.cli.banner import Banner
from taskstream.config import Settings
from taskstream.producer.http import HttpSettings
from taskstream.store.base import redacted_url

PLANTED = "pl4nted-s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://app:{PLANTED}@db:5432/tasks", "postgresql://app:***@db:5432/tasks"),
        (f"postgres://db/tasks?password={PLANTED}&sslmode=require",
         "postgres://db/tasks?password=***&sslmode=require"),
        ("postgresql://app@db/tasks?schema=x", "postgresql://app@db/tasks?schema=x"),
        ("sqlite:///.taskstream/results.db", "sqlite:///.taskstream/results.db"),
    ],
)  # fmt: skip
def test_a_store_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_the_dev_banner_and_the_settings_repr_hold_no_password_or_token() -> None:
    store = f"postgresql://app:{PLANTED}@db:5432/tasks"
    app = App("banner", bootstrap_servers="127.0.0.1:1", store=store)
    text = Banner(app, "m:app", "127.0.0.1:1", embedded=False, created=[]).render()
    assert PLANTED not in text and "postgresql://app:***@db:5432/tasks" in text
    settings = Settings.load({}, store=store, kafka={"sasl.password": PLANTED})
    assert PLANTED not in repr(settings)
    assert PLANTED not in repr(HttpSettings.load({}, settings, tokens=PLANTED))
