# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv sign` and `nnrconv verify`: detached signatures of any model file or folder."""

from __future__ import annotations

import sys

import click

from nnrconv.core import SignatureError

__all__ = ["sign_command", "verify_command"]

_SIGNATURE_HELP = "Signature file (default: PATH.sig beside the model)."


@click.command("sign")
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--key",
    required=True,
    type=click.Path(path_type=str),
    metavar="PRIVATE.pem",
    help="Elliptic-curve private key (PEM, unencrypted).",
)
@click.option("--signature", type=click.Path(path_type=str), metavar="SIG", help=_SIGNATURE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def sign_command(path: str, key: str, signature: str | None, quiet: bool) -> None:
    """Sign PATH (a .nnr, .nnr.onnx, any model file, or an NNEF / SavedModel folder) with a private key."""
    from nnrconv._signing import sign

    written = sign(path, key, signature=signature)
    if not quiet:
        click.echo(f"{path}: signed, signature {written}")


@click.command("verify")
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--key",
    required=True,
    type=click.Path(path_type=str),
    metavar="PUBLIC.pem",
    help="Elliptic-curve public key (PEM) of the signer.",
)
@click.option("--signature", type=click.Path(path_type=str), metavar="SIG", help=_SIGNATURE_HELP)
def verify_command(path: str, key: str, signature: str | None) -> None:
    """Check PATH against its signature and the signer's public key; exit 0 if valid, 1 if not."""
    from nnrconv._signing import verify

    try:
        used = verify(path, key, signature=signature)
    except SignatureError as err:
        click.echo(f"nnrconv: invalid: {err}", err=True)
        sys.exit(1)
    click.echo(f"{path}: valid signature {used}")
