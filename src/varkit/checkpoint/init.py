"""Initialise a model from released or earlier weights before fine-tuning (VAR paper, Sec. 4: both stages are
trained from scratch there; adapting the released ``var_d*``/``vae_ch160v4096z32`` weights to new data starts here).

Plain PyTorch, safetensors only (nothing is unpickled), so the CLI, the Lightning modules and other objectives
(e.g. a CCA fine-tune) can share it::

    from varkit.checkpoint.init import initialize_from
    report = initialize_from(var, "weights/var_d16", classes=["cat", "dog"], class_map="map.json")
    report.describe()   # what was loaded, newly initialised and dropped, as text

A source directory is any of

* a single model directory (``config.json`` + ``model.safetensors``): ``varkit convert`` of one released file, the
  ``runs/<name>/model`` export of ``varkit train`` or the ``runs/<name>/tokenizer`` export of
  ``varkit train-tokenizer``;
* a converted official pair (``var/`` and ``vqvae/`` sub-directories) or a run directory (``model/``,
  ``tokenizer/``): the sub-directory of the model's kind is used.

This is *initialisation*, not resuming: only weights are read; the optimiser, schedule, EMA and step start fresh.

Class remapping (transformer only). The class embedding has ``num_classes + 1`` rows; the last is the null
("unconditional") class of classifier-free guidance and class dropout. Given the new dataset's class names:

* a class whose name is in the checkpoint's ``classes.json`` (written by exports) keeps its row;
* converted ImageNet weights carry no names: a class named by its index (``"207"``) takes that row, and a
  ``class_map`` file (JSON ``{new name: old name or index}``, or a CSV of ``new,old`` rows) maps any name;
* every other (new) class starts from the mean of the checkpoint's class rows (null row excluded): a neutral
  "some class" conditioning that the fine-tune then specialises, rather than a random vector that would put the
  adaLN modulations off the trained distribution;
* the null row is copied to the new last row, so unconditional sampling and CFG keep working.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from varkit.checkpoint.io import CONFIG_FILE, WEIGHTS_FILE, model_kind
from varkit.errors import ConfigError

__all__ = ["CLASS_EMBEDDING_KEY", "InitReport", "initialize_from", "read_class_map", "resolve_source"]

logger = logging.getLogger(__name__)

#: the transformer's class-embedding weight (``num_classes + 1`` rows, the last is the null class)
CLASS_EMBEDDING_KEY = "class_embedding.weight"
_SUBDIRECTORIES = {"var": ("var", "model"), "vqvae": ("vqvae", "tokenizer")}


@dataclass
class InitReport:
    """What :func:`initialize_from` did: tensor names loaded / newly initialised / dropped, and the classes."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    classes_kept: dict[str, int] = field(default_factory=dict)  # new name -> checkpoint row
    classes_new: list[str] = field(default_factory=list)  # initialised from the mean of the old rows
    classes_dropped: list[str] = field(default_factory=list)  # checkpoint classes not in the new dataset
    checkpoint_classes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "loaded": self.loaded,
            "initialized": self.initialized,
            "dropped": self.dropped,
            "classes": {
                "checkpoint_classes": self.checkpoint_classes,
                "kept": self.classes_kept,
                "new": self.classes_new,
                "dropped": self.classes_dropped,
                "new_initialization": "mean of the checkpoint's class rows (null row excluded)",
                "null_row": "copied from the checkpoint's last row",
            },
        }

    def describe(self) -> str:
        """A few log lines: counts, and the names of anything not loaded as is."""
        lines = [
            f"initialised {self.kind} from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.initialized)} newly initialised, {len(self.dropped)} dropped"
        ]
        if self.initialized:
            lines.append(f"  newly initialised: {', '.join(self.initialized[:12])}")
        if self.dropped:
            lines.append(f"  dropped (in the checkpoint, not in the model): {', '.join(self.dropped[:12])}")
        if self.checkpoint_classes is not None:
            lines.append(
                f"  classes: {len(self.classes_kept)} kept, {len(self.classes_new)} new (mean of the old rows), "
                f"{len(self.classes_dropped)} of the checkpoint's {self.checkpoint_classes} unused; null row kept"
            )
            if self.classes_new:
                lines.append(f"  new classes: {', '.join(self.classes_new[:20])}")
        return "\n".join(lines)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1) + "\n")
        return path


def resolve_source(directory: str | Path, kind: str) -> Path:
    """The model directory of ``kind`` (``"var"``/``"vqvae"``) inside ``directory`` (see the module docstring)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ConfigError(f"init_from={root} does not exist (expected `varkit convert` output or a varkit export)")
    for candidate in (root, *(root / sub for sub in _SUBDIRECTORIES[kind])):
        config = candidate / CONFIG_FILE
        if config.is_file() and json.loads(config.read_text()).get("kind") == kind:
            return candidate
    raise ConfigError(
        f"init_from={root} holds no {kind} model: expected a directory with a config.json of kind '{kind}' "
        f"(or its {' / '.join(sub + '/' for sub in _SUBDIRECTORIES[kind])} sub-directory)"
    )


def _checkpoint_classes(source: Path, root: Path) -> list[str] | None:
    for candidate in (source / "classes.json", root / "classes.json"):
        if candidate.is_file():
            mapping = json.loads(candidate.read_text())
            return [name for name, _ in sorted(mapping.items(), key=lambda item: item[1])]
    return None


def read_class_map(path: str | Path) -> dict[str, str]:
    """``{new class name: old class name or index}`` from a JSON object or a two-column CSV (optional header)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"class_map={path} does not exist")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ConfigError(f"class_map {path} must be a JSON object {{new class name: old name or index}}")
        return {str(k): str(v) for k, v in data.items()}
    rows = [row for row in csv.reader(path.read_text().splitlines()) if row]
    if rows and rows[0][0].strip().lower() in ("new", "class", "name", "new_class"):
        rows = rows[1:]
    if any(len(row) < 2 for row in rows):
        raise ConfigError(f"class_map {path}: every CSV row needs two columns (new class, old class or index)")
    return {row[0].strip(): row[1].strip() for row in rows}


def _class_rows(
    new_classes: Sequence[str],
    old_classes: Sequence[str] | None,
    old_count: int,
    class_map: Mapping[str, str] | None,
) -> dict[str, int | None]:
    """``{new name: checkpoint row, or None for a new class}``."""
    old_index = {name: i for i, name in enumerate(old_classes)} if old_classes is not None else {}
    rows: dict[str, int | None] = {}
    for name in new_classes:
        target = (class_map or {}).get(name)
        if target is not None:
            if target in old_index:
                rows[name] = old_index[target]
            elif target.isdigit() and int(target) < old_count:
                rows[name] = int(target)
            else:
                raise ConfigError(
                    f"class_map maps {name!r} to {target!r}, which is neither a class of the checkpoint nor an "
                    f"index below {old_count}"
                )
        elif name in old_index:
            rows[name] = old_index[name]
        elif old_classes is None and name.isdigit() and int(name) < old_count:
            rows[name] = int(name)  # unnamed (converted ImageNet) classes are addressed by index
        else:
            rows[name] = None
    return rows


def _remap_classes(
    weight: Tensor,
    target_rows: int,
    new_classes: Sequence[str] | None,
    old_classes: Sequence[str] | None,
    class_map: Mapping[str, str] | None,
    report: InitReport,
) -> Tensor:
    """The class-embedding weight for the new classes (see the module docstring); fills the report's class fields."""
    old_count = weight.shape[0] - 1
    report.checkpoint_classes = old_count
    if new_classes is None:
        if target_rows != weight.shape[0]:
            raise ConfigError(
                f"the checkpoint has {old_count} classes and the model {target_rows - 1}, and the new dataset has "
                "no classes.json: give the dataset's classes (classes.json beside the shards, or export.classes)"
            )
        report.classes_kept = {str(i): i for i in range(old_count)}
        return weight
    if len(new_classes) != target_rows - 1:
        raise ConfigError(f"{len(new_classes)} class names for a model with {target_rows - 1} classes")
    if old_classes is not None and len(old_classes) != old_count:
        raise ConfigError(f"the checkpoint's classes.json names {len(old_classes)} classes but it has {old_count}")
    rows = _class_rows(new_classes, old_classes, old_count, class_map)
    unmatched = [name for name, row in rows.items() if row is None]
    if old_classes is None and not class_map and len(unmatched) == len(new_classes) and len(new_classes) > 0:
        logger.warning(
            "the checkpoint's %d classes are unnamed (converted weights) and no new class is named by an index or "
            "mapped by class_map: every class starts from the mean class row",
            old_count,
        )
    old_rows = weight[:old_count].float()
    mean = old_rows.mean(dim=0) if old_count > 0 else torch.zeros(weight.shape[1])
    out = torch.empty(target_rows, weight.shape[1], dtype=torch.float32)
    for i, name in enumerate(new_classes):
        row = rows[name]
        out[i] = mean if row is None else old_rows[row]
    out[-1] = weight[-1].float()  # the null class: unconditional sampling and CFG rely on it
    report.classes_kept = {name: row for name, row in rows.items() if row is not None}
    report.classes_new = unmatched
    used = set(report.classes_kept.values())
    names = old_classes if old_classes is not None else [str(i) for i in range(old_count)]
    report.classes_dropped = [names[i] for i in range(old_count) if i not in used]
    return out.to(weight.dtype)


def _mismatch_sentence(name: str, got: tuple[int, ...], want: tuple[int, ...], source: Path, config: Any) -> str:
    shape = {k: config.get(k) for k in ("depth", "width", "num_heads", "codebook_size", "scales") if k in config}
    hint = f" (the checkpoint's model config: {shape})" if shape else ""
    return (
        f"cannot initialise from {source}: parameter {name} has shape {tuple(got)} in the checkpoint but "
        f"{tuple(want)} in the model{hint}; pick the matching model/tokenizer config or set finetune.strict=false"
    )


@torch.no_grad()
def initialize_from(
    model: nn.Module,
    directory: str | Path,
    *,
    strict: bool = True,
    classes: Sequence[str] | None = None,
    class_map: str | Path | Mapping[str, str] | None = None,
) -> InitReport:
    """Copy the weights of ``directory`` into ``model`` (a varkit ``VAR`` or ``VQVAE``); returns an :class:`InitReport`.

    Args:
        strict: every model tensor must come from the checkpoint and every checkpoint tensor must be used (class
            rows remapped as documented); a shape mismatch is always an error, naming the parameter and both
            shapes. ``strict=False`` keeps the model's own initialisation for missing or mismatched tensors and
            drops unused ones (all listed in the report).
        classes: the new dataset's class names in label order (transformer only); ``None`` keeps the checkpoint's.
        class_map: ``{new name: old name or index}`` or a JSON/CSV file of it.

    Raises:
        ConfigError: one sentence, before anything is modified.
    """
    kind = model_kind(model)
    root = Path(directory).expanduser()
    source = resolve_source(root, kind)
    document = json.loads((source / CONFIG_FILE).read_text())
    weights_file = source / WEIGHTS_FILE
    if not weights_file.is_file():
        raise ConfigError(f"init_from={source} has no {WEIGHTS_FILE}")
    stored = load_file(str(weights_file))
    mapping = read_class_map(class_map) if isinstance(class_map, (str, Path)) else class_map
    report = InitReport(source=str(source), kind=kind)
    own = model.state_dict()
    if kind == "var" and CLASS_EMBEDDING_KEY in stored and CLASS_EMBEDDING_KEY in own:
        new_classes = list(classes) if classes is not None else None
        stored[CLASS_EMBEDDING_KEY] = _remap_classes(
            stored[CLASS_EMBEDDING_KEY],
            own[CLASS_EMBEDDING_KEY].shape[0],
            new_classes,
            _checkpoint_classes(source, root),
            mapping,
            report,
        )
    missing = sorted(set(own) - set(stored))
    unexpected = sorted(set(stored) - set(own))
    mismatched = [n for n in sorted(set(own) & set(stored)) if tuple(own[n].shape) != tuple(stored[n].shape)]
    if mismatched and strict:
        name = mismatched[0]
        raise ConfigError(
            _mismatch_sentence(name, stored[name].shape, own[name].shape, source, document.get("config", {}))
        )
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"the model's {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} are not in it")
        if unexpected:
            parts.append(f"its {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''} are not in the model")
        raise ConfigError(
            f"cannot initialise from {source}: {' and '.join(parts)}; use the matching model config or set "
            "finetune.strict=false"
        )
    for name, value in own.items():
        if name in stored and name not in mismatched:
            value.copy_(stored[name].to(value.dtype))
            report.loaded.append(name)
    report.initialized = sorted(set(missing) | set(mismatched))
    report.dropped = unexpected
    for line in report.describe().splitlines():
        logger.info(line)
    return report
