"""One checkpoint loader: a Lightning checkpoint of any mmsenti run → the :class:`SentimentModel` it trained.

::

    from mmsenti.models.checkpoint import load_sentiment_checkpoint

    ckpt = load_sentiment_checkpoint("logs/.../checkpoints/epoch_007.ckpt")
    ckpt.model          # SentimentModel in eval mode, with the checkpoint's weights
    ckpt.model_config   # the SentimentModelConfig it was built from
    ckpt.data_config    # the datamodule's hyper-parameters (else the run folder's resolved_config.yaml data)
    ckpt.task           # "regression" | "classification"

Export, distillation (the teacher), ``mmsenti predict``, the benchmarks and ``eval.py`` all load
checkpoints here, with one set of rules:

* **safe reading**: ``torch.load(weights_only=True)``; a file that carries pickled code names the
  refused class (and says how to re-save it) instead of a traceback;
* **the model comes from the stored config**, never from today's defaults: the text backbone is built
  from its ``config.json`` only (``pretrained_weights=False``: no weight file is read — the
  checkpoint holds every tensor), structured-pruned (smaller) layers are resized to the stored shapes;
* **low-rank factorised layers** (``compression=lowrank``) are rebuilt from the per-layer ranks the
  checkpoint records (``mmsenti_compression.lowrank.ranks``) before the weights load
  (:func:`apply_low_rank`); a file whose record does not fit the model is refused in one line;
* **one ``aux_7class`` rule**: the 7-class head exists when ``aux_7class`` is set *or* its loss had a
  weight (:func:`model_config_from_hparams`);
* **one strictness policy**: ``strict=True`` refuses any missing, unexpected or wrongly shaped tensor
  (HF's non-persistent ``position_ids``/``token_type_ids`` buffers aside), counted the same way
  everywhere by :func:`state_dict_mismatch`; ``strict=False`` loads what fits and reports the rest in
  ``extras["mismatch"]``.

Lower layer: this module knows nothing of Lightning (it reads the checkpoint dict ``torch.save`` wrote).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmsenti.errors import MmsentiError
from mmsenti.models.adapters import adapter_for
from mmsenti.models.layers import LowRankLinear
from mmsenti.models.sentiment_model import SentimentModel, SentimentModelConfig
from mmsenti.registry import lookup

# HF encoders register these as buffers that older/newer versions do not store: never a mismatch
IGNORED_SUFFIXES = ("position_ids", "token_type_ids")
NET_PREFIX = "net."


@dataclass
class LoadedCheckpoint:
    model: SentimentModel
    model_config: SentimentModelConfig
    data_config: dict[str, Any]
    task: str
    extras: dict[str, Any] = field(default_factory=dict)  # path, epoch, global_step, hparams, mismatch, run_config


# ----------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one clear line for a missing, foreign or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise MmsentiError(f"{what} {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err)) or re.search(r"Unsupported global: ([\w.]+)", str(err))
        if refused is None:  # not a refusal: the bytes are not a pickle / torch file at all
            first = str(err).splitlines()[0][:160] if str(err) else ""
            raise MmsentiError(f"{path}: not a readable mmsenti checkpoint (UnpicklingError: {first})") from err
        name = refused.group(1)
        raise MmsentiError(
            f"{path}: refused to unpickle {name} (the file carries Python objects, not only tensors); load only "
            f"checkpoints you trust, and re-save this one as tensors, e.g. torch.save({{'state_dict': m.state_dict(), "
            f"'hyper_parameters': {{...}}}}, path)") from err
    except Exception as err:  # truncated, not a torch file, ...
        first = str(err).splitlines()[0][:160] if str(err) else ""
        raise MmsentiError(f"{path}: not a readable mmsenti checkpoint ({type(err).__name__}: {first})") from err
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise MmsentiError(f"{path}: not a Lightning checkpoint (no 'state_dict'); pass a .ckpt written by train.py")
    return dict(ckpt)


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Missing / unexpected / wrongly shaped keys of ``given`` against ``expected`` (one counting rule)."""
    def keep(keys: set[str]) -> list[str]:
        return sorted(k for k in keys if not k.endswith(IGNORED_SUFFIXES))

    shared = set(expected) & set(given)
    return {
        "missing": keep(set(expected) - set(given)),
        "unexpected": keep(set(given) - set(expected)),
        "shape mismatch": sorted(k for k in shared if tuple(expected[k].shape) != tuple(given[k].shape)),
    }


def describe_mismatch(mismatch: Mapping[str, list[str]]) -> str | None:
    """``"missing: a, b, c … (12); unexpected: x (1)"`` or ``None`` when everything fits."""
    parts = [f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
             for what, keys in mismatch.items() if keys]
    return "; ".join(parts) or None


def model_config_from_hparams(hparams: Mapping[str, Any]) -> SentimentModelConfig:
    """The model config a checkpoint stored, with the one ``aux_7class`` rule.

    Reads ``hparams["model_config"]`` (a ``SentimentModelConfig.to_dict()``) when present, else the
    flat LightningModule kwargs of older checkpoints.
    """
    nested = hparams.get("model_config") or hparams.get("net")
    fields = dict(nested) if isinstance(nested, Mapping) else {k: v for k, v in hparams.items()
                                                              if k in SentimentModelConfig.__dataclass_fields__}
    if "task" not in fields and hparams.get("task"):
        fields["task"] = hparams["task"]
    fields["aux_7class"] = bool(fields.get("aux_7class")) or float(hparams.get("aux_7class_weight") or 0) > 0
    return SentimentModelConfig.from_dict(fields)


def low_rank_ranks(model: nn.Module) -> dict[str, int]:
    """``{qualified name: rank}`` of every :class:`LowRankLinear` in ``model`` (what a checkpoint records)."""
    return {name: m.rank for name, m in model.named_modules() if isinstance(m, LowRankLinear)}


def apply_low_rank(model: nn.Module, ranks: Mapping[str, int], what: str = "checkpoint") -> int:
    """Replace each named ``nn.Linear`` of ``model`` by an (uninitialised) :class:`LowRankLinear` of that rank.

    The structure a factorised checkpoint needs before ``load_state_dict``; layers already
    factorised at that rank are left alone. Returns the number of layers replaced.
    """
    replaced = 0
    for name, rank in ranks.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            module = None
        if isinstance(module, LowRankLinear) and module.rank == int(rank):
            continue
        if not isinstance(module, nn.Linear) or int(rank) < 1:
            raise MmsentiError(f"{what}: its low-rank record names {name} (rank {rank}), which is not an nn.Linear of the "
                               "model its config describes; it was written by another version of the model code")
        parent, _, leaf = name.rpartition(".")
        new = LowRankLinear(module.in_features, module.out_features, int(rank), bias=module.bias is not None,
                            device=module.weight.device, dtype=module.weight.dtype)
        new.first.weight.requires_grad_(module.weight.requires_grad)
        new.second.weight.requires_grad_(module.weight.requires_grad)
        if new.second.bias is not None:
            new.second.bias.requires_grad_(module.bias.requires_grad)
        new.train(module.training)
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
        replaced += 1
    return replaced


def checkpoint_low_rank(ckpt: Mapping[str, Any]) -> dict[str, int]:
    """The per-layer ranks a checkpoint dict records (``mmsenti_compression.lowrank.ranks``); ``{}`` when none."""
    record = (ckpt.get("mmsenti_compression") or {}).get("lowrank") or {}
    return {str(k): int(v) for k, v in (record.get("ranks") or {}).items()}


def match_checkpoint_structure(model: nn.Module, ckpt: Mapping[str, Any], what: str = "checkpoint",
                               prefix: str = NET_PREFIX) -> int:
    """Give ``model`` (a SentimentModel) the structure a checkpoint dict's weights were saved with.

    Low-rank layers from the recorded ranks, then structurally pruned (smaller) layers from the
    stored shapes (:func:`shrink_to_state_dict`). ``prefix``: the key prefix of the model's
    weights in ``ckpt["state_dict"]`` (``net.`` in a Lightning checkpoint). Returns the number of
    layers changed.
    """
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    ranks = checkpoint_low_rank(ckpt)
    for name, rank in ranks.items():
        stored = state.get(f"{name}.first.weight")
        if stored is None or stored.shape[0] != rank:
            raise MmsentiError(f"{what}: its low-rank record says {name} has rank {rank} but its weights "
                               f"{'lack ' + name + '.first.weight' if stored is None else 'hold rank ' + str(stored.shape[0])}; "
                               "the file is damaged or was edited")
    if not ranks and any(k.endswith((".first.weight", ".second.weight")) for k in state):
        factorised = sorted({k.rsplit(".", 2)[0] for k in state if k.endswith(".first.weight")})
        if any(not isinstance(_submodule(model, n), LowRankLinear) for n in factorised):
            raise MmsentiError(f"{what}: holds low-rank (factorised) layers, e.g. {factorised[0]}, but no "
                               "mmsenti_compression.lowrank.ranks record to rebuild them; re-save it from a run with "
                               "compression=lowrank")
    return apply_low_rank(model, ranks, what) + shrink_to_state_dict(model, state)


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def shrink_to_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    """Resize ``nn.Linear`` layers of ``model`` to the (smaller) shapes a checkpoint holds.

    Lets a checkpoint saved *after* structured pruning shrank it load into a freshly built model.
    Returns the number of layers resized.
    """
    resized = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or f"{name}.weight" not in state:
            continue
        shape = tuple(state[f"{name}.weight"].shape)
        if shape == tuple(module.weight.shape):
            continue
        if shape[0] > module.out_features or shape[1] > module.in_features:
            raise MmsentiError(f"checkpoint layer {name} is larger {shape} than the model's {tuple(module.weight.shape)}")
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf,
                nn.Linear(shape[1], shape[0], bias=module.bias is not None))
        resized += 1
    backbone = getattr(getattr(model, "text_encoder", None), "backbone", None)
    if resized and backbone is not None and lookup("text_architecture", getattr(backbone.config, "model_type", "")):
        adapter = adapter_for(backbone)
        for layer in adapter.layers(backbone):  # self-attention: head counts follow the value width
            adapter.set_head_count(layer)
    return resized


def _run_config(path: Path) -> tuple[dict[str, Any], str | None]:
    """The whole resolved config of the run a checkpoint came from (``<run>/resolved_config.yaml``)."""
    for folder in (path.parent, path.parent.parent):
        cfg = folder / "resolved_config.yaml"
        if cfg.is_file():
            from omegaconf import OmegaConf

            try:
                return dict(OmegaConf.to_container(OmegaConf.load(cfg), resolve=False) or {}), str(cfg)
            except Exception:  # an unreadable run config is not fatal: the checkpoint holds the model config
                return {}, None
    return {}, None


# ----------------------------------------------------------------------------- the loader
def load_sentiment_checkpoint(path: str | Path, *, strict: bool = True, what: str = "checkpoint") -> LoadedCheckpoint:
    """Rebuild the model a Lightning checkpoint was trained as (see the module docstring).

    ``what`` names the file in errors (``"distill.teacher_ckpt"``, ``"--against"``, ...).
    """
    path = Path(path)
    ckpt = read_checkpoint(path, what)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if not hparams:
        raise MmsentiError(f"{path}: no hyper_parameters; not a checkpoint of an mmsenti SentimentLitModule")
    try:
        config = model_config_from_hparams(hparams)
    except (TypeError, ValueError, MmsentiError) as err:
        raise MmsentiError(f"{path}: its stored model config is not one this mmsenti builds ({err})") from err
    state = {k[len(NET_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)}
    if not state:
        raise MmsentiError(f"{path}: no '{NET_PREFIX}' weights; not a checkpoint of an mmsenti SentimentLitModule")
    model = SentimentModel(config, pretrained_weights=False)
    match_checkpoint_structure(model, ckpt, str(path))  # low-rank layers (recorded ranks), then pruned shapes
    mismatch = state_dict_mismatch(model.state_dict(), state)
    problem = describe_mismatch(mismatch)
    if problem and strict:
        raise MmsentiError(f"{path} does not match the model its own config describes ({problem}); "
                           "it was written by another version of the model code")
    fitting = {k: v for k, v in state.items() if k not in mismatch["shape mismatch"]}
    model.load_state_dict(fitting, strict=False)
    run_config, run_config_path = _run_config(path)
    # the datamodule's own hyper-parameters (Lightning stores them beside the module's), else the run's config
    data_config = dict(ckpt.get("datamodule_hyper_parameters") or run_config.get("data") or {})
    data_config.pop("_target_", None)
    extras = {"path": str(path), "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"),
              "hparams": hparams, "mismatch": mismatch, "run_config": run_config_path,
              "low_rank": checkpoint_low_rank(ckpt)}
    return LoadedCheckpoint(model=model.eval(), model_config=config, data_config=data_config, task=config.task, extras=extras)
