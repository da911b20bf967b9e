"""Result records: what each notebook measured, the papers' published numbers, and the two side by side.

A notebook turns every number it reports into a :class:`Record` and saves them once at the end::

    recs = results.from_metrics(metrics.evaluate(s_id, s_ood), paper="greg", table=1, method="GReg",
                                dataset="textures", cfg=cfg)
    results.save(recs, "11_greg_finetune", cfg.profile)     # runs/<profile>/results/11_greg_finetune__<setting>.csv

The summary notebook then reads them back::

    results.load_all(cfg.profile)        # every notebook's records, one DataFrame
    results.paper_table("greg", 2)       # the published Table 2 (ood_utils/tables/greg.csv)
    results.compare(cfg.profile)         # reproduced mean +- std next to the published value
    results.overview(cfg.profile)        # which tables the records fill
    results.summary_table(cfg.profile, "greg", 2)

Units: a record stores what :mod:`ood_utils.metrics` returns, fractions in [0, 1]; the papers print
percentages. :func:`to_paper_units` is the one place where one becomes the other.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from . import health as health_, metrics, paths
# the verdict statistics live in ood_utils.verdicts; results re-exports them for the notebooks
from .verdicts import (VERDICT_COLORS, VERDICTS, all_verdict, average_verdict, bootstrap_effect,  # noqa: F401
                       bootstrap_family, interval_verdict, pooled_auroc, seed_verdict, set_average, sweep_verdict,
                       t_halfwidth, verdict)

#: the three papers, as named in the tables and records
PAPERS = {"greg": "GReg (ECCV 2024)", "mme": "MME (BMVC 2025)", "bood": "BOOD (ICML 2025)"}
#: metrics the papers print as percentages while records hold fractions
PERCENT_METRICS = frozenset({"auroc", "fpr95", "aupr_in", "aupr_out", "id_accuracy"})
#: columns of a record CSV (and of :func:`load_all`, plus ``notebook``)
COLUMNS = ("paper", "table", "setting", "method", "dataset", "metric", "value", "seed", "profile")
#: columns of the transcribed tables
PAPER_COLUMNS = ("paper", "table", "setting", "method", "dataset", "metric", "value", "std")
#: columns of :func:`overview`
OVERVIEW_COLUMNS = ("paper", "table", "transcribed", "settings", "paper_settings", "numbers", "with_paper_value")
#: columns of :func:`compare`
COMPARE_COLUMNS = ("profile", "paper", "table", "setting", "method", "dataset", "metric", "n_seeds",
                   "reproduced", "reproduced_std", "paper_setting", "paper_value", "paper_std", "difference",
                   "unit")

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ---------------------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class Record:
    """One reproduced number. ``value`` is in the units :mod:`ood_utils.metrics` returns (a fraction for
    AUROC / FPR95 / AUPR / accuracy); ``setting`` says what was run, e.g. ``"mnist5k/mnist_cnn"``;
    ``dataset`` uses the kit's names, ``"average"`` for the mean over OOD sets and ``"id"`` for the ID set;
    ``table`` is stored as the transcribed tables name it (2, "Table 2" -> "2"; "Fig. 2" -> "fig2")."""

    paper: str
    table: str
    setting: str
    method: str
    dataset: str
    metric: str
    value: float
    seed: int
    profile: str

    def __post_init__(self):
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731 (frozen dataclass)
        set_("table", _table_key(self.table))  # one spelling per table: "Table 2" -> "2", "Fig. 2" -> "fig2"
        for name in ("paper", "setting", "method", "dataset", "metric", "profile"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"Record.{name} must be a non-empty string, got {v!r}")
        try:
            value = float(self.value)
        except (TypeError, ValueError):
            raise ValueError(f"Record.value must be a number, got {self.value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"Record.value must be finite, got {value} ({self.method}, {self.dataset}, {self.metric})")
        if is_percent(self.metric) and not 0.0 <= value <= 1.0:
            raise ValueError(f"{self.metric} = {value} is not a fraction in [0, 1]: records hold what "
                             "ood_utils.metrics returns; the conversion to percent happens in results.compare")
        set_("value", value)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer, float)) \
                or not float(self.seed).is_integer():
            raise ValueError(f"Record.seed must be an integer, got {self.seed!r}")
        set_("seed", int(self.seed))


def _table_str(table) -> str:
    if isinstance(table, bool) or not isinstance(table, (str, int, np.integer)) or str(table).strip() == "":
        raise ValueError(f"table must be a table number or name such as 2 or 'fig2', got {table!r}")
    return str(table).strip()


def _from_cfg(cfg, setting, seed, profile):
    """Fill setting / seed / profile from a ``profiles.Config`` where the caller did not give them."""
    if cfg is not None:
        setting = setting if setting is not None else f"{cfg.id_dataset}/{cfg.arch}"
        seed = seed if seed is not None else cfg.seed
        profile = profile if profile is not None else cfg.profile
    missing = [n for n, v in (("setting", setting), ("seed", seed), ("profile", profile)) if v is None]
    if missing:
        raise ValueError(f"give cfg=... or {', '.join(missing)} explicitly")
    return setting, seed, profile


def record(paper: str, table, method: str, dataset: str, metric: str, value: float, *, cfg=None,
           setting: str | None = None, seed: int | None = None, profile: str | None = None) -> Record:
    """A :class:`Record` with ``setting`` (``"<id_dataset>/<arch>"``), ``seed`` and ``profile`` taken from a
    ``profiles.Config`` unless given."""
    setting, seed, profile = _from_cfg(cfg, setting, seed, profile)
    return Record(paper=paper, table=table, setting=setting, method=method, dataset=dataset, metric=metric,
                  value=value, seed=seed, profile=profile)


def from_metrics(values: Mapping[str, float], *, paper: str, table, method: str, dataset: str, cfg=None,
                 setting: str | None = None, seed: int | None = None, profile: str | None = None,
                 only: Iterable[str] | None = None) -> list[Record]:
    """One record per entry of a metrics dict, e.g. the output of ``metrics.evaluate`` (``only`` picks a
    subset, e.g. ``("auroc", "fpr95")``)."""
    keys = list(values) if only is None else list(only)
    unknown = [k for k in keys if k not in values]
    if unknown:
        raise ValueError(f"metrics {unknown} not in the given values; valid: {sorted(values)}")
    return [record(paper, table, method, dataset, k, values[k], cfg=cfg, setting=setting, seed=seed,
                   profile=profile) for k in keys]


# ---------------------------------------------------------------------------------------------- save / load

def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} must be a plain name (letters, digits, '_', '-', '.'), got {name!r}")
    return name


def results_dir(profile: str) -> Path:
    """``runs/<profile>/results/`` (moved by ``$OOD_KIT_RUNS``)."""
    return paths.runs_dir(_check_name(profile, "profile"), "results")


def _slug(setting: str) -> str:
    """A file-name-safe form of a setting ("mnist6/mnist_cnn" -> "mnist6_mnist_cnn")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(setting)).strip("_") or "setting"


class Saved(list):
    """The files one save wrote (one per setting); prints as the paths, comma-separated."""

    def __str__(self) -> str:
        return ", ".join(str(p) for p in self) or "(nothing to save)"


def _write_per_setting(frame: pd.DataFrame, folder: Path, notebook: str) -> Saved:
    """One CSV per (notebook, setting): ``<notebook>__<setting>.csv``. A re-run of a notebook replaces its
    earlier rows *of the same setting* only, so ``-p id_dataset mnist6`` keeps the ``mnist5k`` run's rows."""
    folder.mkdir(parents=True, exist_ok=True)
    legacy = folder / f"{notebook}.csv"                 # one file per notebook, as older runs wrote
    if legacy.exists():
        legacy.unlink()
    written = Saved()
    for setting, part in frame.groupby("setting", sort=False):
        out = folder / f"{notebook}{SEPARATOR}{_slug(setting)}.csv"
        with paths.atomic_path(out) as tmp:
            part.to_csv(tmp, index=False, float_format="%.10g")
        written.append(out)
    return written


def _notebook_of(csv: Path) -> str:
    return csv.stem.split(SEPARATOR)[0]


#: between the notebook and the setting in a results file name
SEPARATOR = "__"


def save(records: Iterable[Record | Mapping], notebook: str, profile: str) -> Saved:
    """Write one notebook's records to ``runs/<profile>/results/<notebook>__<setting>.csv``, one file per
    setting, replacing that notebook's earlier records of the same setting (a re-run supersedes the previous
    one; a run on another ID dataset sits beside it). Each file appears atomically: a temporary file in the
    same folder is renamed over it, so a reader never sees half a CSV."""
    notebook = _check_name(Path(str(notebook)).name.removesuffix(".ipynb"), "notebook")
    recs = [r if isinstance(r, Record) else Record(**dict(r)) for r in records]
    wrong = sorted({r.profile for r in recs if r.profile != profile})
    if wrong:
        raise ValueError(f"saving under profile {profile!r} records made with profile(s) {wrong}")
    frame = pd.DataFrame([asdict(r) for r in recs], columns=list(COLUMNS))
    return _write_per_setting(frame, results_dir(profile), notebook)


def load_all(profile: str) -> pd.DataFrame:
    """Every notebook's records of ``profile`` in one DataFrame (columns :data:`COLUMNS` + ``notebook``),
    in notebook order; empty (with those columns) when nothing was saved yet."""
    frames = []
    for csv in sorted(results_dir(profile).glob("*.csv")):
        frame = pd.read_csv(csv, dtype={"table": str, "setting": str, "method": str, "dataset": str})
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{csv} is not a results file: columns {missing} are missing")
        frames.append(frame[list(COLUMNS)].assign(notebook=_notebook_of(csv)))
    if not frames:
        dtypes = {"value": float, "seed": int}
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in (*COLUMNS, "notebook")})
    return pd.concat(frames, ignore_index=True).astype({"value": float, "seed": int})


# ---------------------------------------------------------------------------------------------- paper tables

@lru_cache(maxsize=None)
def _paper_csv(paper: str) -> pd.DataFrame:
    text = resources.files("ood_utils").joinpath("tables", f"{paper}.csv")
    with resources.as_file(text) as path:
        frame = pd.read_csv(path, dtype={"table": str, "setting": str, "method": str, "dataset": str,
                                         "metric": str})
    return frame.astype({"value": float, "std": float})


def tables() -> dict[str, list[str]]:
    """The transcribed tables: paper -> table names, in the papers' order."""
    return {p: list(dict.fromkeys(_paper_csv(p)["table"])) for p in PAPERS}


def paper_table(paper: str, table=None) -> pd.DataFrame:
    """The published numbers of one table (or of every table of ``paper`` when ``table`` is None), tidy:
    columns :data:`PAPER_COLUMNS`, ``value`` as printed (percent for AUROC / FPR95 / accuracy), ``std``
    where printed. ``paper`` is case-insensitive; ``table`` may be 2, "2" or "Table 2"."""
    key = _key(paper)
    if key not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    frame = _paper_csv(key)
    if table is None:
        return frame.copy()
    valid = tables()[key]
    wanted = _table_key(table)
    if wanted not in valid:
        raise ValueError(f"{key} has no table {table!r}; valid: {', '.join(valid)}")
    return frame[frame["table"] == wanted].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- comparison

def is_percent(metric: str) -> bool:
    """Whether the papers print ``metric`` as a percentage (any spelling: "FPR95", "fpr95", "id-accuracy")."""
    return _key(metric) in _PERCENT_KEYS


def to_paper_units(metric: str, value):
    """Fractions -> percent for :data:`PERCENT_METRICS`; other metrics (ratios, covariances) unchanged."""
    return value * 100.0 if is_percent(metric) else value


def _key(text) -> str:
    """Spelling-insensitive key: "Energy Loss", "energy_loss" and "energy-loss" agree; "+" is kept
    (GReg vs GReg+, NME vs NME+)."""
    return re.sub(r"[^a-z0-9+]", "", str(text).lower())


_PERCENT_KEYS = frozenset(_key(m) for m in PERCENT_METRICS)


def _method_key(method) -> str:
    """:func:`_key` of a method; a pair "A & B" (MME's Table 4 covariances) matches in either order."""
    parts = str(method).split("&")
    return "&".join(sorted(_key(p) for p in parts)) if len(parts) > 1 else _key(method)


def _table_key(table) -> str:
    """2, "2", "Table 2", "Fig. 2" -> "2", "2", "2", "fig2"."""
    return re.sub(r"^table", "", _key(_table_str(table)))


def _setting_parts(setting: str) -> tuple[str, str]:
    """"CIFAR-10/ResNet-18" -> ("cifar10", "resnet18"); a setting without "/" is matched on both parts."""
    head, sep, tail = str(setting).partition("/")
    return (_key(head), _key(tail)) if sep else (_key(head), _key(head))


def _arch_matches(mine: str, theirs: str) -> bool:
    """Same network: equal keys, or one a variant of the other (the kit's ``resnet34_768`` is BOOD's ResNet-34,
    ``"BiT"`` names ``BiT-S-R101x1``)."""
    if not mine or not theirs:
        return False
    return mine == theirs or (min(len(mine), len(theirs)) >= 3 and (mine.startswith(theirs) or theirs.startswith(mine)))


def _pick_setting(mine: str, candidates: list[str]) -> str:
    """Which of the paper's settings a reproduced setting stands for. Preference: the same network (and ID
    dataset), then the same ID dataset, then the first setting the paper lists, so ``mini`` (MNIST and a
    small CNN) is compared with the first column of a table."""
    my_id, my_arch = _setting_parts(mine)

    def score(setting: str) -> int:
        their_id, their_arch = _setting_parts(setting)
        return 2 * _arch_matches(my_arch, their_arch) + (my_id == their_id)

    return max(candidates, key=lambda s: (score(s), -candidates.index(s)))


def _dataset_key(dataset: str, setting: str) -> str:
    """The ID test set is "id" in the tables whatever it is called in a profile (cifar10, mnist5k, ...)."""
    key = _key(dataset)
    return "id" if key == "id" or key == _setting_parts(setting)[0] else key


def _first_spelling(column: pd.Series, key) -> pd.Series:
    first: dict[str, str] = {}
    for value in column:
        first.setdefault(key(value), value)
    return column.map(lambda v: first[key(v)])


def compare(profile: str) -> pd.DataFrame:
    """Reproduced numbers of ``profile`` next to the published ones, one row per (paper, table, setting,
    method, dataset, metric) that a notebook saved. ``reproduced`` / ``reproduced_std`` are the mean and
    standard deviation over seeds (``n_seeds``), in the paper's units (percent for AUROC, FPR95, accuracy);
    ``paper_value`` / ``paper_std`` come from the transcribed table (NaN where the paper has no such cell),
    ``difference`` = reproduced - paper.

    Settings differ between profiles (``mini`` runs MNIST with a small CNN), so each reproduced setting
    stands for one of the table's settings, shown in ``paper_setting``: the same network, else the same ID
    dataset, else the first setting the table lists. Within it, records match the paper's cells on
    (method, dataset, metric), spelling-insensitively ("Energy Loss" = "energy_loss")."""
    recs = load_all(profile)
    if recs.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COMPARE_COLUMNS})
    # One group per paper and table however a notebook spelled them ("MME" / "mme"): the first spelling wins.
    recs = recs.assign(paper=_first_spelling(recs["paper"], _key), table=_first_spelling(recs["table"], _table_key))
    settings, cells = _paper_lookup()
    rows = []
    group_cols = ["paper", "table", "setting", "method", "dataset", "metric"]
    for (paper, table, setting, method, dataset, metric), g in recs.groupby(group_cols, sort=False):
        mean, std = metrics.mean_std(to_paper_units(metric, g["value"].to_numpy(dtype=float)))
        row = dict(profile=profile, paper=paper, table=table, setting=setting, method=method, dataset=dataset,
                   metric=metric, n_seeds=int(g["seed"].nunique()), reproduced=mean, reproduced_std=std,
                   paper_setting=None, paper_value=np.nan, paper_std=np.nan, difference=np.nan,
                   unit="%" if is_percent(metric) else "")
        table_key = (_key(paper), _table_key(table))
        if table_key in settings:
            chosen = _pick_setting(setting, settings[table_key])
            row["paper_setting"] = chosen
            cell = (*table_key, chosen, _method_key(method), _dataset_key(dataset, setting), _key(metric))
            if cell in cells:
                value, paper_std = cells[cell]
                row.update(paper_value=value, paper_std=paper_std, difference=mean - value)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


@lru_cache(maxsize=None)
def _paper_lookup() -> tuple[dict, dict]:
    """(paper, table) -> its settings in the paper's order, and
    (paper, table, setting, method, dataset, metric) keys -> (value, std)."""
    settings: dict[tuple, list[str]] = {}
    cells: dict[tuple, tuple[float, float]] = {}
    for paper in PAPERS:
        for r in _paper_csv(paper).itertuples(index=False):
            listed = settings.setdefault((paper, r.table), [])
            if r.setting not in listed:
                listed.append(r.setting)
            key = (paper, r.table, r.setting, _method_key(r.method), _key(r.dataset), _key(r.metric))
            cells[key] = (float(r.value), float(r.std))
    return settings, cells


def overview(profile: str) -> pd.DataFrame:
    """Which tables the records of ``profile`` fill, one row per (paper, table): the papers in
    :data:`PAPERS` order and their tables in printed order, then tables the papers print no numbers for
    (figures' sweeps) and the kit's own. ``transcribed`` says whether the paper prints the table as numbers,
    ``settings`` / ``paper_settings`` what was run and which published setting it stands for, ``numbers``
    how many reproduced numbers (means over seeds) and ``with_paper_value`` how many have a published cell."""
    cmp = compare(profile)
    if cmp.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in OVERVIEW_COLUMNS})
    printed = {p: [_table_key(t) for t in ts] for p, ts in tables().items()}
    rows = []
    for (paper, table), g in cmp.groupby(["paper", "table"], sort=False):
        key, table_key = _key(paper), _table_key(table)
        rows.append(dict(paper=paper, table=table, transcribed=table_key in printed.get(key, []),
                         settings=", ".join(dict.fromkeys(g["setting"])),
                         paper_settings=", ".join(dict.fromkeys(g["paper_setting"].dropna())),
                         numbers=len(g), with_paper_value=int(g["paper_value"].notna().sum())))

    def order(row):
        key, table_key = _key(row["paper"]), _table_key(row["table"])
        paper_rank = list(PAPERS).index(key) if key in PAPERS else len(PAPERS)
        tables_ = printed.get(key, [])
        table_rank = tables_.index(table_key) if table_key in tables_ else len(tables_)
        return paper_rank, key, table_rank, table_key

    rows.sort(key=order)
    return pd.DataFrame(rows, columns=list(OVERVIEW_COLUMNS))


def summary_table(profile: str, paper: str, table) -> pd.DataFrame:
    """One published table with the reproduced numbers beside it, for display: rows (setting, method),
    columns (dataset, metric, source) with source "paper" or "reproduced" (mean over seeds, paper units).
    Shows the paper settings the reproduced records were matched to (every setting if none were), with
    the reproduced cells under the paper's spelling of method, dataset and metric where they match one.

    A table that the paper does not print as numbers (a figure's sweep, the kit's own baselines) is shown
    from the records alone, with "reproduced" columns only. A (paper, table) that is neither transcribed
    nor recorded raises the ValueError of :func:`paper_table`, which lists the valid names."""
    cmp = compare(profile)
    if not cmp.empty:
        cmp = cmp[(cmp["paper"].map(_key) == _key(paper)) & (cmp["table"].map(_table_key) == _table_key(table))]
    try:
        published = paper_table(paper, table)
    except ValueError:
        if cmp.empty:
            raise
        published = pd.DataFrame({c: pd.Series(dtype=float if c in ("value", "std") else object)
                                  for c in PAPER_COLUMNS})
    settings = list(dict.fromkeys(cmp["paper_setting"].dropna())) or list(dict.fromkeys(published["setting"]))
    published = published[published["setting"].isin(settings)]
    long = [published.assign(source="paper")[["setting", "method", "dataset", "metric", "value", "source"]]]
    if not cmp.empty:
        # The paper's spelling wherever a reproduced name matched one ("GReg+", "lsun_c", the ID set "id").
        methods = {_method_key(m): m for m in published["method"]}
        datasets = {_key(d): d for d in published["dataset"]}
        metric_names = {_key(m): m for m in published["metric"]}
        dataset_keys = [_dataset_key(d, s) for d, s in zip(cmp["dataset"], cmp["setting"])]
        mine = cmp.assign(setting=cmp["paper_setting"].fillna(cmp["setting"]),
                          method=[methods.get(_method_key(m), m) for m in cmp["method"]],
                          dataset=["id" if k == "id" else datasets.get(k, d)
                                   for k, d in zip(dataset_keys, cmp["dataset"])],
                          metric=[metric_names.get(_key(m), m) for m in cmp["metric"]],
                          value=cmp["reproduced"], source="reproduced")
        long.append(mine[["setting", "method", "dataset", "metric", "value", "source"]])
    frame = pd.concat(long, ignore_index=True).astype({"value": float})
    wide = frame.pivot_table(index=["setting", "method"], columns=["dataset", "metric", "source"],
                             values="value", sort=False)
    setting_order = list(dict.fromkeys(frame["setting"]))
    order_rows = sorted(dict.fromkeys(zip(frame["setting"], frame["method"])),
                        key=lambda sm: setting_order.index(sm[0]))
    order_cols = list(dict.fromkeys(zip(frame["dataset"], frame["metric"])))
    cols = [(d, m, s) for d, m in order_cols for s in ("paper", "reproduced") if (d, m, s) in wide.columns]
    rows = pd.MultiIndex.from_tuples(order_rows, names=["setting", "method"])
    return wide.reindex(index=rows, columns=pd.MultiIndex.from_tuples(cols, names=wide.columns.names))


# ---------------------------------------------------------------------------------------------- claims

#: display names of the ID datasets, for setting labels
ID_DISPLAY = {"mnist5k": "MNIST-5k", "mnist6": "MNIST-6 (digits 0-5)", "cifar10": "CIFAR-10",
              "cifar100": "CIFAR-100", "imagenet10": "ImageNet-10", "imagenet100": "ImageNet-100",
              "imagenet1k": "ImageNet-1K"}
#: columns of a claims file and of :func:`claims`
CLAIM_COLUMNS = ("paper", "claim", "setting", "paper_value", "ours", "ours_lo", "ours_hi", "unit", "verdict",
                 "note", "profile", "kind", "role", "diagnosis")
#: what a claim asserts: an improvement (the method is better), no harm (it is not worse, e.g. ID accuracy
#: kept), or a property (a statement about the data or the method, e.g. a covariance inequality); they are
#: counted apart
CLAIM_KINDS = ("improvement", "no harm", "property")
#: "primary": the one metric that decides the claim (counted); "supporting": the same comparison in
#: another metric or average, shown beside it and not counted again
CLAIM_ROLES = ("primary", "supporting")


def setting_label(cfg=None, *, profile: str | None = None, id_dataset: str | None = None,
                  arch: str | None = None) -> str:
    """What actually ran, for tables and claims: ``"mini · MNIST-5k · mnist_cnn"``. A ``mini`` number is
    never labelled with the paper setting it stands in for."""
    profile = profile or getattr(cfg, "profile", None)
    id_dataset = id_dataset or getattr(cfg, "id_dataset", None)
    arch = arch or getattr(cfg, "arch", None)
    if not (profile and id_dataset and arch):
        raise ValueError("setting_label needs cfg=... or profile, id_dataset and arch")
    return f"{profile} · {ID_DISPLAY.get(id_dataset, id_dataset)} · {arch}"


def claim(paper: str, claim: str, *, ours: float, verdict: str, cfg=None, ours_lo: float | None = None,
          ours_hi: float | None = None, paper_value=None, unit: str = "", note: str = "",
          setting: str | None = None, profile: str | None = None, kind: str = "improvement",
          role: str = "primary", diagnosis: str = "", health=None) -> dict:
    """One tested claim of a paper: the paper's value (a number or the paper's words), ours with its
    interval, the verdict (one of :data:`VERDICTS`), labelled with the setting that ran.

    ``kind`` (:data:`CLAIM_KINDS`) and ``role`` (:data:`CLAIM_ROLES`) say how the claim is counted;
    ``diagnosis`` says why the verdict came out as it did (e.g. "far-OOD at ceiling", "aux inactive: 5%
    inside margins"). ``health``: the :class:`ood_utils.health.Health` of the training runs the claim rests
    on; if any failed, the verdict becomes "undetermined" and the diagnosis "training failed: ..."."""
    if _key(paper) not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; valid: {', '.join(PAPERS)}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if kind not in CLAIM_KINDS:
        raise ValueError(f"kind must be one of {CLAIM_KINDS}, got {kind!r}")
    if role not in CLAIM_ROLES:
        raise ValueError(f"role must be one of {CLAIM_ROLES}, got {role!r}")
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError("claim must be a sentence saying what the paper claims")
    ours = float(ours)
    if not math.isfinite(ours):
        raise ValueError(f"ours must be finite, got {ours} for claim {claim!r}")
    bounds = [None if v is None else float(v) for v in (ours_lo, ours_hi)]
    if (bounds[0] is None) != (bounds[1] is None) or (bounds[0] is not None and bounds[0] > bounds[1]):
        raise ValueError(f"give both ours_lo <= ours_hi or neither, got {ours_lo}, {ours_hi}")
    if health is not None:
        healths = [health] if isinstance(health, health_.Health) else list(health)
        failure = health_.failure_diagnosis(healths)
        if failure:
            verdict, diagnosis = "undetermined", failure + (f"; {diagnosis}" if diagnosis else "")
    return {"paper": _key(paper), "claim": claim.strip(), "setting": setting or setting_label(cfg),
            "paper_value": "" if paper_value is None else str(paper_value), "ours": ours,
            "ours_lo": bounds[0], "ours_hi": bounds[1], "unit": unit, "verdict": verdict, "note": note,
            "profile": profile or getattr(cfg, "profile", None) or "mini", "kind": kind, "role": role,
            "diagnosis": str(diagnosis)}


def sweep_claim(paper: str, text: str, runs: Mapping, paper_value, *, higher_is_better: bool = True,
                name: str = "value", supporting: bool = True, **claim_kw) -> list[dict]:
    """A pre-declared sweep claim as claim rows: :func:`ood_utils.verdicts.sweep_verdict` of ``runs`` (value ->
    metric over seeds) decides the primary row ("the paper's value is at least as good as every other
    value"; ours = its margin over the closest other value, with that comparison's interval); with
    ``supporting``, one supporting row per other value (shown, not counted). ``name`` labels the
    hyperparameter ("alpha"); ``claim_kw`` go to :func:`claim` (cfg, unit, paper_value, diagnosis, health,
    ...; ``kind`` defaults to "improvement")."""
    v = sweep_verdict(runs, paper_value, higher_is_better)
    m = len(v["comparisons"])
    note = (f"closest: {name}={v['closest']}; {m} comparison{'s' if m > 1 else ''} with {name}={paper_value}, "
            f"each at {v['level']:.1%} (Bonferroni), seeds paired")
    user_note = claim_kw.pop("note", "")
    rows = [claim(paper, text, ours=v["delta"], ours_lo=v["lo"], ours_hi=v["hi"], verdict=v["verdict"],
                  note=f"{user_note}; {note}" if user_note else note, **claim_kw)]
    if supporting:
        kw = {k: val for k, val in claim_kw.items() if k != "role"}
        for r in v["comparisons"].itertuples(index=False):
            rows.append(claim(paper, f"{text}: {name}={paper_value} vs {name}={r.value}", ours=r.delta,
                              ours_lo=r.lo, ours_hi=r.hi, verdict=r.verdict, role="supporting",
                              note=f"{r.n} paired seeds, {v['level']:.1%} interval", **kw))
    return rows


#: what a claim comes to once its kind and diagnosis are read (notebook 90 groups by these)
OUTCOMES = ("reproduced", "not reproduced: tie within noise", "not reproduced: opposite effect",
            "untestable here", "undetermined: training failed")
#: an outcome's colour: the colour of the verdict it comes from, reddish purple for "untestable here"
OUTCOME_COLORS = dict(zip(OUTCOMES, (VERDICT_COLORS["agrees"], VERDICT_COLORS["tie within noise"],
                                     VERDICT_COLORS["disagrees"], "#CC79A7", VERDICT_COLORS["undetermined"])))


def outcome(verdict: str, kind: str = "improvement", diagnosis: str = "") -> str:
    """The outcome of one claim (:data:`OUTCOMES`). A diagnosis that starts with "training failed" makes it
    "undetermined: training failed"; one that starts with "untestable" (a premise that does not hold at this
    scale, e.g. far-OOD at ceiling) makes it "untestable here", as does "undetermined" without a reason (no
    noise estimate). Otherwise the verdict decides; for a "no harm" claim (ID accuracy kept, ...) a tie
    within noise means no harm was detected, which is what the paper claims."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    reason = str(diagnosis or "").strip().lower()
    if reason.startswith("training failed"):
        return OUTCOMES[4]
    if reason.startswith("untestable") or verdict == "undetermined":
        return OUTCOMES[3]
    if verdict == "agrees" or (verdict == "tie within noise" and kind == "no harm"):
        return OUTCOMES[0]
    return OUTCOMES[1] if verdict == "tie within noise" else OUTCOMES[2]


def claims_dir(profile: str) -> Path:
    """``runs/<profile>/results/claims/``."""
    return results_dir(profile) / "claims"


def save_claims(rows: Iterable[Mapping], notebook: str, profile: str) -> Saved:
    """Write one notebook's claim rows (from :func:`claim`) to
    ``runs/<profile>/results/claims/<notebook>__<setting>.csv``, atomically, replacing that notebook's
    earlier claims of the same setting."""
    notebook = _check_name(Path(str(notebook)).name.removesuffix(".ipynb"), "notebook")
    frame = pd.DataFrame([dict(r) for r in rows], columns=list(CLAIM_COLUMNS))
    wrong = sorted(set(frame["profile"]) - {profile})
    if wrong:
        raise ValueError(f"saving under profile {profile!r} claims made with profile(s) {wrong}")
    for column, valid in (("verdict", VERDICTS), ("kind", CLAIM_KINDS), ("role", CLAIM_ROLES)):
        bad = sorted(set(frame[column].dropna()) - set(valid))
        if bad:
            raise ValueError(f"unknown {column}(s) {bad}; valid: {valid}")
    return _write_per_setting(frame, claims_dir(profile), notebook)


def claims(profile: str) -> pd.DataFrame:
    """Every notebook's claims of ``profile``, one table: paper, claim, setting, paper's value, ours with
    its interval, verdict, kind, role, diagnosis, the notebook that tested it and the claim's
    :func:`outcome` (empty, with those columns, before any run)."""
    frames = [pd.read_csv(csv, dtype={"paper_value": str, "note": str, "unit": str, "diagnosis": str},
                          keep_default_na=False,
                          na_values={"ours": [""], "ours_lo": [""], "ours_hi": [""]}).assign(notebook=_notebook_of(csv))
              for csv in sorted(claims_dir(profile).glob("*.csv"))]
    columns = [*CLAIM_COLUMNS, "notebook", "outcome"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=float if c.startswith("ours") else object) for c in columns})
    frame = pd.concat(frames, ignore_index=True)
    # claim files written before a column existed read as the column's default
    for column, default in (("kind", "improvement"), ("role", "primary"), ("diagnosis", "")):
        if column not in frame:
            frame[column] = default
    frame["diagnosis"] = frame["diagnosis"].fillna("").astype(str)
    frame["outcome"] = [outcome(v, k, d) for v, k, d in zip(frame["verdict"], frame["kind"], frame["diagnosis"])]
    return frame[columns]
