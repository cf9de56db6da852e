from pathlib import Path

import pytest

from countyread.errors import ConfigurationError
from countyread.settings import load_settings


def test_defaults_match_the_operating_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("COUNTYREAD_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert s.data_dir == Path("./var")
    assert s.ae_title == "COUNTYREAD"
    assert s.dicom_port == 11112
    assert s.api_port == 8000
    assert s.accept_any_ae is False
    assert s.stable_quiet_s == 10.0
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_database_url.endswith("var/countyread.db")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COUNTYREAD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COUNTYREAD_DICOM_PORT", "4242")
    monkeypatch.setenv("COUNTYREAD_ACCEPT_ANY_AE", "true")
    s = load_settings()
    assert s.data_dir == tmp_path and s.dicom_port == 4242 and s.accept_any_ae


def test_toml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "countyread.toml"
    cfg.write_text('ae_title = "CENTER1"\napi_port = 9001\n', encoding="utf-8")
    monkeypatch.setenv("COUNTYREAD_CONFIG", str(cfg))
    monkeypatch.setenv("COUNTYREAD_API_PORT", "9002")
    s = load_settings()
    assert s.ae_title == "CENTER1"
    assert s.api_port == 9002


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("COUNTYREAD_DICOM_PORT", "70000", "COUNTYREAD_DICOM_PORT"),
        ("COUNTYREAD_AE_TITLE", "A_TITLE_THAT_IS_TOO_LONG", "COUNTYREAD_AE_TITLE"),
        ("COUNTYREAD_LOG_LEVEL", "LOUD", "COUNTYREAD_LOG_LEVEL"),
        ("COUNTYREAD_STABLE_QUIET_S", "0", "COUNTYREAD_STABLE_QUIET_S"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert fragment in str(info.value)


def test_production_refuses_placeholder_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTYREAD_ENVIRONMENT", "production")
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("COUNTYREAD_SECRET_KEY", "a-real-secret-from-the-vault-7f3a")
    assert load_settings().environment == "production"


def test_unknown_setting_in_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("dicom_prot = 104\n", encoding="utf-8")
    monkeypatch.setenv("COUNTYREAD_CONFIG", str(cfg))
    with pytest.raises(ConfigurationError, match="dicom_prot"):
        load_settings()
