# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Detached signatures of model files and folders, made and checked with OpenSSF model-signing.

A digest inside a stream proves it was not damaged, but anyone who alters the stream can
recompute it; a signature made with a private key proves who made the content. We sign with
elliptic-curve PEM keys, offline (no Sigstore, no network): model-signing hashes every file of
the model (one file, or every file under a folder) into an in-toto manifest and signs it in a
Sigstore bundle (JSON) written beside the model, ``MODEL.sig`` by default. The bundle is the
library's own format, so its ``model_signing verify key`` command checks our signatures too.

NOTE: model-signing is imported inside the functions (it costs about a second and is an
optional extra); no cryptography is written here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nnrconv._files import staged_output
from nnrconv.core import FormatError, FrameworkMissingError, SignatureError

__all__ = ["default_signature_path", "sign", "verify"]

_INSTALL = "pip install 'nnrconv[signing]'"
_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle"


def default_signature_path(model: str | os.PathLike[str]) -> Path:
    """``MODEL.sig`` beside the model file or folder."""
    path = Path(model)
    return path.with_name(path.name + ".sig")


def _library() -> tuple[Any, Any, Any]:
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as exc:
        raise FrameworkMissingError(
            f"signing needs the model-signing library, which is not installed ({exc.name}); install it with: {_INSTALL}"
        ) from exc
    return hashing, signing, verifying


def _require_model(model: Path) -> None:
    if not model.exists():
        raise FormatError(f"{model}: no such file or folder")
    if model.is_symlink():
        raise FormatError(f"{model}: is a symbolic link; sign or verify what it points to")


def _hashing_config(hashing: Any, model: Path, signature: Path) -> Any:
    """The library's default hashing (SHA-256 per file), ignoring the signature if it sits inside."""
    config = hashing.Config()
    if model.is_dir():
        try:
            inside = signature.resolve().relative_to(model.resolve())
        except ValueError:
            return config
        config.set_ignored_paths(paths=[inside])
    return config


def _is_bundle(path: Path) -> bool:
    """Whether a file is a signature bundle (so re-signing may replace it)."""
    try:
        with open(path, "rb") as f:
            head = json.loads(f.read(1 << 20)) if path.stat().st_size < (1 << 20) else None
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and str(head.get("mediaType", "")).startswith(_BUNDLE_MEDIA_TYPE)


def _check_key(key: Path, *, private: bool) -> None:
    """Refuse, in one line, a key file that is missing, encrypted or not an elliptic-curve PEM key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        data = key.read_bytes()
        loaded = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (OSError, ValueError, TypeError) as exc:
        raise _key_error(key, exc) from exc
    wanted = ec.EllipticCurvePrivateKey if private else ec.EllipticCurvePublicKey
    if not isinstance(loaded, wanted):
        kind = "private" if private else "public"
        raise FormatError(f"{key}: is a {type(loaded).__name__} key; model-signing needs an elliptic-curve {kind} key")


def _key_error(key: Path, exc: Exception) -> FormatError:
    if isinstance(exc, FileNotFoundError):
        return FormatError(f"{key}: no such key file")
    if isinstance(exc, TypeError) and "password" in str(exc).lower():
        return FormatError(f"{key}: the private key is encrypted; nnrconv takes unencrypted PEM keys only")
    return FormatError(f"{key}: not an elliptic-curve PEM key that model-signing accepts ({str(exc)[:120]})")


def sign(
    model: str | os.PathLike[str],
    private_key: str | os.PathLike[str],
    *,
    signature: str | os.PathLike[str] | None = None,
) -> Path:
    """Sign a model file or folder with an elliptic-curve private key (PEM); return the signature path.

    An existing file at the signature path is replaced only when it is a signature bundle.

    Raises:
        FormatError: the model or the key is missing, or the key is not an EC PEM private key.
        OutputError: the signature path is taken by something that is not a signature.
        FrameworkMissingError: model-signing is not installed.
    """
    from nnrconv.core import OutputError

    model, key = Path(model), Path(private_key)
    target = default_signature_path(model) if signature is None else Path(signature)
    _require_model(model)
    if target.resolve() == model.resolve():
        raise OutputError(f"{target}: the signature would replace the model; choose another path")
    if target.exists() and not _is_bundle(target):
        raise OutputError(f"{target}: exists and is not a signature; choose another path with --signature")
    hashing, signing, _ = _library()
    _check_key(key, private=True)
    try:
        config = signing.Config().use_elliptic_key_signer(private_key=key)
    except (OSError, ValueError, TypeError) as exc:
        raise _key_error(key, exc) from exc
    config.set_hashing_config(_hashing_config(hashing, model, target))
    with staged_output(target, force=True) as staged:
        try:
            config.sign(model, staged)
        except OSError as exc:
            raise FormatError(f"{model}: cannot read the model to sign it: {exc.strerror or exc}") from exc
        except ValueError as exc:  # e.g. a symbolic link inside a model folder
            raise FormatError(f"{model}: cannot sign: {exc}") from exc
    return target


def verify(
    model: str | os.PathLike[str],
    public_key: str | os.PathLike[str],
    *,
    signature: str | os.PathLike[str] | None = None,
) -> Path:
    """Check that a model file or folder is exactly what the holder of the key signed; return the signature path.

    Raises:
        SignatureError: no signature, a malformed one, one made with another key, or content that
            changed since signing (a byte altered, a file added, removed or renamed).
        FormatError: the model or the key file is missing, or the key is not an EC PEM public key.
        FrameworkMissingError: model-signing is not installed.
    """
    model, key = Path(model), Path(public_key)
    sig = default_signature_path(model) if signature is None else Path(signature)
    _require_model(model)
    if not sig.is_file():
        raise SignatureError(f"{model}: unsigned (no signature at {sig})")
    _, _, verifying = _library()
    _check_key(key, private=False)
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=key)
    except (OSError, ValueError, TypeError) as exc:
        raise _key_error(key, exc) from exc
    try:
        config.verify(model, sig)
    except ValueError as exc:
        raise SignatureError(f"{model}: {_why(str(exc), key, sig)}") from exc
    except Exception as exc:  # malformed bundles surface as many library types (JSON, pydantic, base64)
        if type(exc).__name__ == "InvalidSignature":
            raise SignatureError(f"{model}: signature {sig} was not made with the key {key}") from exc
        raise SignatureError(f"{model}: {sig} is not a valid signature ({type(exc).__name__})") from exc
    return sig


def _why(message: str, key: Path, sig: Path) -> str:
    """One line from model-signing's verdict (its mismatch messages list every digest)."""
    if message.startswith("Key mismatch"):
        return f"signature {sig} was not made with the key {key}"
    if message.startswith("Signature mismatch"):
        return f"content differs from what {sig} signed (altered, added or removed files)"
    first = message.splitlines()[0] if message else "invalid"
    return f"{sig} is not a valid signature: {first[:200]}"
