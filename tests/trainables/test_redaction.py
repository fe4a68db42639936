"""No secret in a URI is printed or logged: user:password and query strings are redacted in the
dry run, in MLflow params and in the logged config.json."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.run_page import CONFIG_ARTIFACT, log_config
from orchestrator.sweep import main
from orchestrator.tracking import log_params
from trainables.config import TrialConfig
from trainables.redaction import redact_uri, redact_values

SECRET_URL = "https://alice:pa55word@weights.example:8443/ssl/simclr.pth?X-Amz-Signature=s1gnature"
SECRETS = ("alice", "pa55word", "s1gnature")


@pytest.mark.parametrize("uri, redacted", [
    (SECRET_URL, "https://REDACTED@weights.example:8443/ssl/simclr.pth?REDACTED"),
    ("https://weights.example/x.pth", "https://weights.example/x.pth"),
    ("postgresql://user:pw@db:5432/mlflow", "postgresql://REDACTED@db:5432/mlflow"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("runs:/0123abcd/backbone", "runs:/0123abcd/backbone"),
    ("weights/simclr.pth", "weights/simclr.pth"),
    ("http://[::1]:5000/?token=t", "http://[::1]:5000/?REDACTED"),
])
def test_redact_uri_keeps_the_address_and_drops_the_secrets(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted


def test_redact_values_reaches_nested_values_and_words_in_messages() -> None:
    values = {"weights_path": SECRET_URL, "axes": [SECRET_URL, 3],
              "note": f"could not fetch {SECRET_URL} now"}
    assert not any(secret in json.dumps(redact_values(values)) for secret in SECRETS)
    assert redact_values(values)["axes"][1] == 3


def test_the_dry_run_prints_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["smoke", "--dry-run", "--set", "init=ssl-imagenet",
                 "--set", f"weights_path={SECRET_URL},https://bob:s3cond@weights.example/y.pth",
                 "--tracking-uri", "https://carol:tr4cking@mlflow.example"])
    output = capsys.readouterr()
    assert code == 0, output.err
    assert "weights.example" in output.out  # the address is there, its secrets are not
    for secret in (*SECRETS, "bob", "s3cond", "carol", "tr4cking"):
        assert secret not in output.out + output.err, secret


def test_logged_params_and_config_json_hold_no_secret(tmp_path: Path) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("redaction", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment_id).info.run_id
    params = TrialConfig(init="ssl-imagenet", weights_path=SECRET_URL).resolved().to_dict()
    log_params(client, run_id, params)
    log_config(client, run_id, params)
    logged = client.get_run(run_id).data.params
    assert logged["weights_path"] == redact_uri(SECRET_URL)
    config = json.loads(Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, str(tmp_path))).read_text())
    assert config["weights_path"] == redact_uri(SECRET_URL)
    stored = json.dumps(logged) + json.dumps(config)
    assert not any(secret in stored for secret in SECRETS)
