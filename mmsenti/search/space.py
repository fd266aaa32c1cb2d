"""The search space of a sweep, declared in the config: ``search.space`` (``configs/hparams_search/mosi_nas.yaml``).

The Hydra Optuna sweeper's own ``params`` are flat: every knob is drawn in every trial. Architecture
search needs knobs that exist only with another choice (a pruning ratio only when the trial prunes, a
low-rank budget only when it factorises), and choices that are lists (the text layers kept). Here each
entry of ``search.space`` is one knob::

    search:
      space:
        text_layers: {param: model.net.text_encoder.keep_layers, choices: [[0, 1, 2, 3, 4, 5], [0, 2, 4]]}
        fusion_width: {param: model.net.fusion.d_model, choices: [32, 64, 96]}
        compression: {choices: [none, prune_structured, lowrank]}              # a config group: param = the key
        ffn_pruned: {param: compression.ffn_amount, low: 0.1, high: 0.6, when: {compression: prune_structured}}
        lr: {param: model.optimizer.lr, low: 2e-4, high: 3e-3, log: true}

* ``param``: the override it sets (default: the entry's name), a config key or a group (``model/audio_encoder``);
* ``choices`` (categorical; a list choice is passed as ``[0,2,4]``), or ``low``/``high`` with optional
  ``step``, ``log`` and ``int: true`` (integer);
* ``when``: ``{entry: value, ...}`` — drawn only when the named *earlier* entries took those values.

:func:`suggest` is the sweeper's ``custom_search_space`` (``hydra.sweeper.custom_search_space:
mmsenti.search.space.suggest``): for each trial it draws the entries in order, so the trial's Optuna
parameters are exactly the overrides of its run (``param=value``), and the sweeper launches them.
Entries are overridable from the command line one by one (``search.space.fusion_width.choices=[32,64]``,
``~search.space.text_layers`` to drop one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmsenti.errors import MmsentiError

KINDS = ("choices", "low")
ENTRY_KEYS = {"param", "choices", "low", "high", "step", "log", "int", "when"}


def override_value(value: Any) -> Any:
    """A choice as an override value: lists in compact Hydra syntax (``[0,2,4]``), scalars as they are."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(override_value(v)) for v in value) + "]"
    if value is None:
        return "null"
    return value


@dataclass
class Knob:
    """One entry of ``search.space``."""

    name: str
    param: str
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False
    when: dict[str, Any] = field(default_factory=dict)

    def active(self, drawn: Mapping[str, Any]) -> bool:
        return all(k in drawn and str(drawn[k]) == str(override_value(v)) for k, v in self.when.items())

    def draw(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.param, [override_value(c) for c in self.choices])
        if self.integer:
            return trial.suggest_int(self.param, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.param, float(self.low), float(self.high), step=self.step, log=self.log)


def parse_space(space: Mapping[str, Any] | None) -> list[Knob]:
    """``search.space`` (a mapping of entries) → knobs, checked: one line naming the entry and the fix."""
    if not space:
        raise MmsentiError("search.space is empty: declare the knobs to search (see configs/hparams_search/mosi_nas.yaml)")
    if not isinstance(space, Mapping):
        raise MmsentiError(f"search.space must be a mapping of entries, got {type(space).__name__}")
    knobs: list[Knob] = []
    params: dict[str, str] = {}
    for name, entry in space.items():
        if entry is None:  # removed with search.space.NAME=null
            continue
        where = f"search.space.{name}"
        if not isinstance(entry, Mapping):
            raise MmsentiError(f"{where}: expected {{param:, choices: [...]}} or {{param:, low:, high:}}, got {entry!r}")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise MmsentiError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(ENTRY_KEYS))}")
        has_choices, has_range = "choices" in entry, "low" in entry or "high" in entry
        if has_choices == has_range:
            raise MmsentiError(f"{where}: give either choices: [...] or low: and high: (not both, not neither)")
        param = str(entry.get("param") or name)
        if param in params:
            raise MmsentiError(f"{where}: {param} is already searched by search.space.{params[param]}")
        params[param] = str(name)
        when = dict(entry.get("when") or {})
        earlier = {k.name for k in knobs}
        for key in when:
            if key not in earlier:
                raise MmsentiError(f"{where}: when: {{{key}: ...}} must name an earlier entry of search.space "
                                   f"(earlier: {', '.join(sorted(earlier)) or 'none'})")
        if has_choices:
            choices = list(entry["choices"] or [])
            if not choices:
                raise MmsentiError(f"{where}: choices is empty")
            knobs.append(Knob(str(name), param, choices=choices, when=when))
            continue
        if "low" not in entry or "high" not in entry:
            raise MmsentiError(f"{where}: a range needs both low: and high:")
        try:
            low, high = float(entry["low"]), float(entry["high"])
            step = float(entry["step"]) if entry.get("step") is not None else None
        except (TypeError, ValueError):
            raise MmsentiError(f"{where}: low/high/step must be numbers, got {entry.get('low')!r}/{entry.get('high')!r}/"
                               f"{entry.get('step')!r}") from None
        if not low < high:
            raise MmsentiError(f"{where}: low ({low:g}) must be below high ({high:g})")
        log = bool(entry.get("log", False))
        if log and (low <= 0 or step is not None):
            raise MmsentiError(f"{where}: log: true needs low > 0 and no step")
        knobs.append(Knob(str(name), param, low=low, high=high, step=step, log=log, integer=bool(entry.get("int", False)),
                          when=when))
    return knobs


def draw(knobs: list[Knob], trial) -> dict[str, Any]:
    """Draw every active knob for ``trial`` in order; returns ``{entry name: value}`` of those drawn."""
    drawn: dict[str, Any] = {}
    for knob in knobs:
        if knob.active(drawn):
            drawn[knob.name] = knob.draw(trial)
    return drawn


def suggest(cfg, trial) -> None:
    """The Hydra Optuna sweeper's ``custom_search_space``: draw ``cfg.search.space`` for one trial."""
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, "search.space")
    space = OmegaConf.to_container(node, resolve=True) if node is not None else None
    draw(parse_space(space), trial)
