"""TLS on the SCP (PS3.15 B.1) and the ``countyread send`` / ``nodes`` commands."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from countyread.context import AppContext
from countyread.db import instances
from countyread.nodes import add_node, list_nodes
from dicom_node.cli import nodes_main, send_main
from dicom_node.scp import DicomNode
from dicom_node.scu import client_tls, send_paths
from tests.dicom_node import synth
from tests.dicom_node.conftest import SCU_AE, make_ctx

pytestmark = pytest.mark.integration


def _write_pair(d: Path, name: str, issuer: tuple | None, ca: bool) -> tuple[Path, Path, tuple]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_name, signer_key = issuer if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(signer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    cert_path, key_path = d / f"{name}.crt", d / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, (subject, key)


@pytest.fixture()
def pki(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "pki"
    d.mkdir()
    ca_crt, _, ca = _write_pair(d, "ca", None, True)
    srv_crt, srv_key, _ = _write_pair(d, "server", ca, False)
    cli_crt, cli_key, _ = _write_pair(d, "client", ca, False)
    return {"ca": ca_crt, "srv_crt": srv_crt, "srv_key": srv_key, "cli_crt": cli_crt,
            "cli_key": cli_key}


def test_tls_requires_client_certificate(tmp_path: Path, pki: dict[str, Path],
                                         engine: str) -> None:
    ctx = make_ctx(tmp_path / "var", tls_cert=pki["srv_crt"], tls_key=pki["srv_key"],
                   tls_ca=pki["ca"], dicom_engine=engine)
    add_node(ctx.db, name="t", ae_title=SCU_AE)
    node = DicomNode(ctx)
    node.start()
    try:
        files = synth.write_ct_series(tmp_path / "ct", 3, size=16)
        good = client_tls(pki["ca"], pki["cli_crt"], pki["cli_key"])
        res = send_paths("127.0.0.1", node.port, "COUNTYREAD", files, calling_ae=SCU_AE,
                         tls=good)
        assert [r.ok for r in res] == [True, True, True]
        anonymous = client_tls(pki["ca"])
        res = send_paths("127.0.0.1", node.port, "COUNTYREAD", files[:1], calling_ae=SCU_AE,
                         tls=anonymous, timeout_s=10)
        assert res[0].status is None  # handshake refused: nothing sent
        plain = send_paths("127.0.0.1", node.port, "COUNTYREAD", files[:1], calling_ae=SCU_AE,
                           timeout_s=10)
        assert plain[0].status is None
    finally:
        node.stop()
    with ctx.db.begin() as conn:
        assert len(conn.execute(select(instances)).all()) == 3
    ctx.close()


def test_tls_bad_key_is_a_clear_configuration_error(tmp_path: Path, pki: dict[str, Path],
                                                    engine: str) -> None:
    from countyread.errors import ConfigurationError

    ctx = make_ctx(tmp_path / "var", tls_cert=pki["srv_crt"], tls_key=pki["cli_key"],
                   dicom_engine=engine)
    with pytest.raises(ConfigurationError, match="TLS"):
        DicomNode(ctx).start()
    ctx.close()
    assert ssl.OPENSSL_VERSION


def test_send_and_nodes_commands(
    node: DicomNode, ctx: AppContext, workdir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COUNTYREAD_DATA_DIR", str(ctx.settings.data_dir))
    assert nodes_main(["add", "--name", "乡镇卫生院", "--ae", "TOWN2", "--host", "10.0.0.2",
                       "--port", "104", "--kind", "township", "--send", "SC,KOS"]) == 0
    assert nodes_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "TOWN2" in out and "10.0.0.2:104" in out and "SC,KOS" in out
    town2 = next(n for n in list_nodes(ctx.db) if n.ae_title == "TOWN2")
    assert nodes_main(["disable", str(town2.id)]) == 0
    assert not next(n for n in list_nodes(ctx.db) if n.ae_title == "TOWN2").active

    files = synth.write_ct_series(workdir / "ct", 4, size=16)
    # A study folder also holds non-DICOM files (reports, truth.json): skipped, not failed.
    (workdir / "ct" / "truth.json").write_text("{}", encoding="utf-8")
    code = send_main(["127.0.0.1", str(node.port), str(workdir / "ct"), "--aet", SCU_AE,
                      "--aec", "COUNTYREAD", "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    assert "sent 4/4 instances" in captured.out
    assert "skipped 1 non-DICOM file" in captured.err
    # Named explicitly, a non-DICOM file is an error.
    code = send_main(["127.0.0.1", str(node.port), str(workdir / "ct" / "truth.json"),
                      "--aet", SCU_AE, "--aec", "COUNTYREAD", "--no-progress"])
    assert code == 1
    capsys.readouterr()
    # The disabled node is refused at association: every file fails, exit status 1.
    code = send_main(["127.0.0.1", str(node.port), *map(str, files), "--aet", "TOWN2",
                      "--no-progress"])
    assert code == 1
    assert "sent 0/4" in capsys.readouterr().out


def test_send_paths_keeps_input_order(node: DicomNode, workdir: Path) -> None:
    files = synth.write_ct_series(workdir / "ct", 2, size=16)
    junk = workdir / "notes.txt"
    junk.write_text("not DICOM")
    res = send_paths("127.0.0.1", node.port, "COUNTYREAD", [files[0], junk, files[1]],
                     calling_ae=SCU_AE)
    assert [r.path for r in res] == [str(files[0]), str(junk), str(files[1])]
    assert [r.ok for r in res] == [True, False, True]
    assert res[1].status is None and "DICOM" in (res[1].error_comment or "")
