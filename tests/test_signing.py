# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Detached signatures: sign, verify, and convert --verify-key refusing unsigned or altered inputs."""

import json
import shutil
from pathlib import Path

import pytest

from nnrconv.cli import main

pytest.importorskip("model_signing", reason="model-signing is not installed (pip install 'nnrconv[signing]')")
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _key_pair(folder: Path, name: str, curve: ec.EllipticCurve | None = None) -> tuple[Path, Path]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {"alice": _key_pair(folder, "alice"), "mallory": _key_pair(folder, "mallory", ec.SECP384R1())}


@pytest.fixture
def nnr(tmp_path, capsys):
    target = tmp_path / "m.nnr"
    assert run(capsys, EXAMPLE, target, "--lossless", "-q")[0] == 0
    return target


def test_sign_then_verify(nnr, keys, capsys):
    private, public = keys["alice"]
    code, out, err = run(capsys, "sign", nnr, "--key", private)
    assert code == 0, err
    signature = nnr.with_name("m.nnr.sig")
    assert json.loads(signature.read_text())["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert out.strip() == f"{nnr}: signed, signature {signature}"
    code, out, err = run(capsys, "verify", nnr, "--key", public)
    assert code == 0, err
    assert out.strip() == f"{nnr}: valid signature {signature}"


def test_every_flipped_byte_region_is_detected(nnr, keys, capsys):
    private, public = keys["alice"]
    assert run(capsys, "sign", nnr, "--key", private, "-q")[0] == 0
    original = nnr.read_bytes()
    for offset in (0, len(original) // 2, len(original) - 1):
        altered = bytearray(original)
        altered[offset] ^= 0x01
        nnr.write_bytes(bytes(altered))
        code, out, err = run(capsys, "verify", nnr, "--key", public)
        assert code == 1 and out == "", (offset, err)
        assert len(err.strip().splitlines()) == 1 and "content differs" in err
    nnr.write_bytes(original + b"\0")
    assert run(capsys, "verify", nnr, "--key", public)[0] == 1
    nnr.write_bytes(original)
    assert run(capsys, "verify", nnr, "--key", public)[0] == 0


def test_missing_signature_and_wrong_key_are_invalid(nnr, keys, capsys):
    code, _, err = run(capsys, "verify", nnr, "--key", keys["alice"][1])
    assert code == 1 and "unsigned" in err
    assert run(capsys, "sign", nnr, "--key", keys["alice"][0], "-q")[0] == 0
    code, _, err = run(capsys, "verify", nnr, "--key", keys["mallory"][1])
    assert code == 1 and "not made with the key" in err and len(err.strip().splitlines()) == 1


def test_a_forged_signature_is_invalid(nnr, keys, capsys):
    """Mallory re-signs an altered model and puts Alice's key hint in the bundle: still invalid."""
    sig = nnr.with_name("m.nnr.sig")
    assert run(capsys, "sign", nnr, "--key", keys["alice"][0], "-q")[0] == 0
    hint = json.loads(sig.read_text())["verificationMaterial"]["publicKey"]["hint"]
    nnr.write_bytes(nnr.read_bytes() + b"\0")
    assert run(capsys, "sign", nnr, "--key", keys["mallory"][0], "-q")[0] == 0
    bundle = json.loads(sig.read_text())
    bundle["verificationMaterial"]["publicKey"]["hint"] = hint
    sig.write_text(json.dumps(bundle))
    code, _, err = run(capsys, "verify", nnr, "--key", keys["alice"][1])
    assert code == 1 and "not made with the key" in err
    sig.write_text("{not json")
    code, _, err = run(capsys, "verify", nnr, "--key", keys["alice"][1])
    assert code == 1 and "not a valid signature" in err


def test_folders_are_signed_file_by_file(tmp_path, keys, capsys):
    folder = tmp_path / "m.nnef"
    (folder / "sub").mkdir(parents=True)
    (folder / "graph.nnef").write_text("version 1.0;")
    (folder / "sub" / "w.dat").write_bytes(b"\1" * 64)
    sig = tmp_path / "elsewhere.sig"
    assert run(capsys, "sign", folder, "--key", keys["alice"][0], "--signature", sig, "-q")[0] == 0
    assert run(capsys, "verify", folder, "--key", keys["alice"][1], "--signature", sig)[0] == 0
    (folder / "extra.dat").write_bytes(b"")
    assert run(capsys, "verify", folder, "--key", keys["alice"][1], "--signature", sig)[0] == 1
    (folder / "extra.dat").unlink()
    (folder / "sub" / "w.dat").rename(folder / "sub" / "v.dat")
    assert run(capsys, "verify", folder, "--key", keys["alice"][1], "--signature", sig)[0] == 1
    (folder / "sub" / "v.dat").rename(folder / "sub" / "w.dat")
    # A signature kept inside the folder does not sign itself.
    inside = folder / "model.sig"
    assert run(capsys, "sign", folder, "--key", keys["alice"][0], "--signature", inside, "-q")[0] == 0
    assert run(capsys, "verify", folder, "--key", keys["alice"][1], "--signature", inside)[0] == 0


def test_bad_keys_and_paths_are_one_line(nnr, tmp_path, keys, capsys):
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    for key, words in ((tmp_path / "none.pem", "no such key file"), (rsa_key, "elliptic-curve"), (nnr, "elliptic")):
        code, _, err = run(capsys, "sign", nnr, "--key", key)
        assert code == 3 and words in err and len(err.strip().splitlines()) == 1, err
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    code, _, err = run(capsys, "sign", nnr, "--key", keys["alice"][0], "--signature", precious)
    assert code == 7 and precious.read_text() == "mine"
    assert run(capsys, "sign", nnr, "--key", keys["alice"][0], "--signature", nnr)[0] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnr", "notes.txt", "rsa.pem"]


def test_convert_verify_key_refuses_unsigned_or_altered_input(nnr, tmp_path, keys, capsys):
    private, public = keys["alice"]
    out = tmp_path / "out.onnx"
    code, _, err = run(capsys, nnr, out, "--verify-key", public)
    assert code == 9 and "unsigned" in err and not out.exists()
    assert run(capsys, "sign", nnr, "--key", private, "-q")[0] == 0
    assert run(capsys, nnr, out, "--verify-key", public, "-q")[0] == 0 and out.exists()
    moved = tmp_path / "elsewhere.sig"
    shutil.move(nnr.with_name("m.nnr.sig"), moved)
    out.unlink()
    assert run(capsys, nnr, out, "--verify-key", public, "--signature", moved, "-q")[0] == 0
    data = bytearray(nnr.read_bytes())
    data[-1] ^= 0x80
    nnr.write_bytes(bytes(data))
    code, _, err = run(capsys, nnr, out, "--force", "--verify-key", public, "--signature", moved)
    assert code == 9 and "content differs" in err
    code, _, err = run(capsys, nnr, out, "--signature", moved)
    assert code == 2 and "--verify-key" in err


def test_api_sign_and_verify(nnr, keys):
    import nnrconv
    from nnrconv.core import SignatureError

    signature = nnrconv.sign(nnr, keys["alice"][0])
    assert nnrconv.verify(nnr, keys["alice"][1]) == signature
    with pytest.raises(SignatureError):
        nnrconv.verify(nnr, keys["mallory"][1])
