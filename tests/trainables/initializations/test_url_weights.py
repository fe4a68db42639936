"""URL weights: https only, cached under a hash of the whole URL, kept only when their sha256 is
weights_sha256's; and a weights_path file checked against weights_sha256 before it is read."""

import hashlib
from pathlib import Path

import pytest
import torch

from orchestrator.sweep import main
from trainables.backbones import build_backbone
from trainables.config import ConfigError, TrialConfig
from trainables.downloads import WeightsDigestError, store_download
from trainables.initializations import build_initialized_backbone
from trainables.initializations.availability import weights_availability
from trainables.initializations.pretrained import url_cache_path


@pytest.fixture
def torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "torch_hub"


def test_two_urls_with_one_file_name_are_two_cached_files(torch_hub: Path) -> None:
    first = url_cache_path("https://a.example/ssl/resnet50.pth")
    second = url_cache_path("https://b.example/other/resnet50.pth")
    assert first != second and first.name == second.name == "resnet50.pth"
    assert first.is_relative_to(torch_hub / "checkpoints")
    assert url_cache_path("https://a.example/ssl/resnet50.pth") == first  # the same URL, the same file


def test_a_download_is_kept_only_when_its_sha256_is_weights_sha256(tmp_path: Path) -> None:
    data = b"the bytes a download brought"
    right, wrong = hashlib.sha256(data).hexdigest(), hashlib.sha256(b"other").hexdigest()
    partial, target = tmp_path / "partial.pth", tmp_path / "cache" / "x.pth"
    target.parent.mkdir()
    partial.write_bytes(data)
    with pytest.raises(WeightsDigestError) as raised:
        store_download(partial, target, wrong, "https://user:secret@h.example/x.pth?signature=s3cr3t")
    message = str(raised.value)
    assert "\n" not in message and right in message and wrong in message
    assert "secret" not in message and "s3cr3t" not in message
    assert not target.exists()
    store_download(partial, target, right.upper(), "https://h.example/x.pth")
    assert target.read_bytes() == data and not partial.exists()


def test_a_weights_path_file_is_checked_against_weights_sha256_before_it_is_read(
        tmp_path: Path, torch_hub: Path) -> None:
    path = tmp_path / "simclr.pth"
    torch.save(build_backbone("cbr_nano")[0].state_dict(), path)
    right = hashlib.sha256(path.read_bytes()).hexdigest()
    _, _, report = build_initialized_backbone("cbr_nano", "ssl-imagenet", weights_path=str(path),
                                              weights_sha256=right)
    assert "loaded 24 of the model's 24 tensors" in report
    with pytest.raises(WeightsDigestError) as raised:
        build_initialized_backbone("cbr_nano", "ssl-imagenet", weights_path=str(path),
                                   weights_sha256="0" * 64)
    assert "\n" not in str(raised.value) and right in str(raised.value)
    assert weights_availability("ssl-imagenet", "cbr_nano", "simclr", None, str(path), right).endswith(
        "(sha256 verified)")
    assert weights_availability("ssl-imagenet", "cbr_nano", "simclr", None, str(path), "0" * 64).startswith(
        "refused:")


def test_a_cached_url_download_is_found_under_its_hash_offline(torch_hub: Path) -> None:
    url = "https://h.example/ssl/simclr_cbr_nano.pth"
    cached = url_cache_path(url)
    cached.parent.mkdir(parents=True)
    torch.save(build_backbone("cbr_nano")[0].state_dict(), cached)
    _, _, report = build_initialized_backbone("cbr_nano", "ssl-imagenet", weights_path=url)
    assert str(cached) in report
    assert weights_availability("ssl-imagenet", "cbr_nano", "simclr", None, url) == f"weights_path: {cached}"


@pytest.mark.parametrize("location", ["http://h.example/x.pth", "ftp://h.example/x.pth", "s3://bucket/x.pth"])
def test_urls_other_than_https_are_refused_in_the_config(location: str) -> None:
    with pytest.raises(ConfigError, match="only https:// URLs are downloaded"):
        TrialConfig(init="ssl-imagenet", weights_path=location).validate()


@pytest.mark.parametrize("values, words", [
    (dict(weights_path="w.pth", weights_sha256="abc"), "64 hex digits"),
    (dict(weights_sha256="0" * 64), "set weights_path"),
    (dict(weights_path="runs:/0123/backbone", weights_sha256="0" * 64), "MLflow"),
])
def test_a_bad_weights_sha256_is_refused(values: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        TrialConfig(init="ssl-imagenet", **values).validate()


@pytest.mark.parametrize("scheme", ["http", "ftp"])
def test_the_dry_run_refuses_a_plain_url_with_one_line_naming_the_fix(
        scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["smoke", "--dry-run", "--set", "init=ssl-imagenet",
                 "--set", f"weights_path={scheme}://user:secret@h.example/x.pth?token=s3cr3t"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(errors) == 1, captured.err
    assert "only https:// URLs are downloaded" in errors[0] and "give its https:// address" in errors[0]
    assert "secret" not in captured.err + captured.out and "s3cr3t" not in captured.err + captured.out
    assert list(tmp_path.iterdir()) == []
