"""``segboard weights import`` and ``segboard weights list``: this machine's pretrained-weights cache.

Kept apart from :mod:`worker.cli`; :func:`add_parsers` is called by :func:`worker.cli.build_parser`.
The cache is the folder of the ``weights_dir`` setting (default ``<artifact root>/weights``); see
``docs/weights.md``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parsers", "cmd_weights_import", "cmd_weights_list"]


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def cmd_weights_import(args: argparse.Namespace) -> int:
    """Check that a state-dict file loads into the encoder, then copy it into the cache."""
    from worker.cli import _settings
    from worker.services import weights

    entry = weights.import_weights(settings=_settings(args), file=args.file, encoder=args.encoder,
                                   weights=args.weights, in_channels=args.in_channels)
    print(f"cached {entry.weights!r} weights for encoder {entry.encoder} ({_size(entry.size_bytes)}) at {entry.path}")
    return 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    """Print every cached weights file (encoder, tag, size, path)."""
    from worker.cli import _settings
    from worker.services import weights

    settings = _settings(args)
    entries = weights.list_cached_weights(settings=settings)
    if args.json:
        print(json.dumps([e.model_dump() for e in entries], indent=2))
        return 0
    if not entries:
        print(f"no cached weights in {settings.weights_path}; "
              "add some with `segboard weights import FILE --encoder NAME`")
        return 0
    width = max(len(e.encoder) for e in entries)
    for e in entries:
        print(f"{e.encoder:{width}}  {e.weights:10}  {_size(e.size_bytes):>10}  {e.path}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``weights import`` and ``weights list`` to ``segboard``'s sub-parsers (no database options: the
    cache is a folder on this machine)."""
    wt = sub.add_parser("weights", help="the cache of pretrained encoder weights, for machines without internet")
    wsub = wt.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    im = wsub.add_parser("import", help="check a state-dict file against an encoder and copy it into the cache")
    im.add_argument("file", help="a .safetensors file or a torch.save'd state dict (.pth)")
    im.add_argument("--encoder", required=True, help="smp encoder name or tu-<timm model>, e.g. resnet18")
    im.add_argument("--weights", default="imagenet", help="the tag configs name in model.encoder_weights")
    im.add_argument("--in-channels", type=int, default=3, help="input channels the weights were trained with")
    im.set_defaults(func=cmd_weights_import)
    ls = wsub.add_parser("list", help="list the cached weights files")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_weights_list)
