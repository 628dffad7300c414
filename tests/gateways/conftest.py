"""Fixtures of the gateway tests that read Kinesis Video streams (``kvs_fake``)."""

import pytest
from kvs_fake import FakeKvs


@pytest.fixture()
def aws_credentials(monkeypatch, tmp_path):
    """The stand-in's test credentials, and no other AWS configuration or instance metadata."""
    from kvs_fake import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture()
async def kvs():
    """The Kinesis Video Streams stand-in, serving on loopback."""
    fake = await FakeKvs().start()
    yield fake
    await fake.stop()
