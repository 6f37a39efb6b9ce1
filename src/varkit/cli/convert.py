"""``varkit convert``: official VAR / VQ-VAE ``.pth`` weights -> varkit directories (safetensors + config.json).

Examples::

    varkit convert vae_ch160v4096z32.pth out/vqvae_f16
    varkit convert var_d16.pth out/var_d16                       # VAR arguments inferred from the weights
    varkit convert var_d16.pth out/var_d16 --set depth=16 --set patch_nums=[1,2,3,4,5,6,8,10,13,16]
    varkit convert var_parity_a.pt out/parity                    # fixture format: writes out/parity/{var,vqvae}

``--set`` takes the reference's own constructor names (V, Cvae, ch, share_quant_resi, using_znorm, patch_nums,
num_classes, depth, embed_dim, num_heads, mlp_ratio, shared_aln, attn_l2_norm), so any official-format checkpoint
converts, not only the released presets. The same in Python: ``varkit.checkpoint.convert_official(src, out, ...)``.
"""

from __future__ import annotations

import argparse
import ast

HELP = "convert official VAR/VQVAE .pth weights into varkit model directories (safetensors + config)"


def _assignment(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("source", help="official .pth state dict (or the parity-fixture format)")
    parser.add_argument("output", help="directory to write")
    parser.add_argument("--kind", choices=("var", "vqvae"), help="force the model kind (detected from keys)")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        type=_assignment,
        default=[],
        metavar="NAME=VALUE",
        help="a reference constructor argument (repeatable), e.g. --set patch_nums=[1,2,4,8,16]",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from varkit.checkpoint import CheckpointKeyError, convert_official
    from varkit.cli import fail

    if not Path(args.source).is_file():
        return fail(f"{args.source} does not exist")
    try:
        written = convert_official(args.source, args.output, kind=args.kind, config=dict(args.settings) or None)
    except (CheckpointKeyError, ValueError) as err:
        return fail(f"cannot convert {args.source}: {err}")
    for kind, directory in written.items():
        print(f"wrote {kind}: {directory}")
    return 0
