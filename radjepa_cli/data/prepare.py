"""prepare-data: any source → WebDataset shards + manifest.json (DESIGN.md shard contract).

Plan (cheap, deterministic): enumerate items → keep those whose image is on disk (one grouped summary of the
absent ones; presence.py) → patient-level split (official, else a hash of (seed, patient))
→ filters (excluded subjects, views, frontal:lateral ratio, split, --n) → shards of `shard_size` items per split
→ this part's shards (`--part i/N` takes every N-th). Write: items are decoded/resized/encoded in worker processes,
in order, and the main process streams them into tars (temp file + rename) and appends one journal line per finished
shard; manifest.json, the index of those lines, is written when the run starts and when it ends. A shard whose inputs
were all rejected is recorded but not written. A rerun with the same configuration keeps shards whose planned keys,
sha256 and rejected inputs (size, mtime) are unchanged and rewrites the rest; --overwrite redoes everything.
A rerun with another configuration (any setting that changes the bytes, --png-level included) is refused with the
settings that differ, unless --overwrite.
Patient ids leave the process only as salted hashes; bad inputs are rejected with their reason, never fatal
(unless --strict).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import secrets
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..io import read_json, write_json
from . import manifest as mf
from .decode import DecodeError
from .presence import absolute, common_folder, missing_summary, split_present
from .resume import earlier_entries, file_state, plan_digest, still_valid
from .record import SPLITS
from .shards import PNG_LEVEL, ShardWriter, encode_record, file_sha256, shard_name
from .sources import Source, SourceItem, get_source

FRONTAL, LATERAL = ("PA", "AP", "AP_SUPINE"), ("LATERAL", "LL")
MIN_PARALLEL_ITEMS = 64  # below this, starting worker processes costs more than it saves


@dataclass
class PrepareConfig:
    dataset: str
    out: str
    root: str | None = None
    n: int | None = None               # synthetic: how many to render; others: cap after filtering
    size: int = 256                    # shorter side in pixels
    bits: int = 8                      # PNG bit depth (8 or 16)
    png_level: int = PNG_LEVEL         # zlib level of the PNGs: same pixels; 0 = ~3x faster decode, 1.3-2x bytes
    workers: int = 0                   # decoding processes; 0 = one per available CPU (at most 8)
    split: str = "all"                 # train | val | test | all
    shard_size: int = 1000
    seed: int = 0                      # synthetic seed and the hash key of patient-level splits
    salt: str | None = None            # patient-id hash salt; None → OUT/.salt (created once, random)
    val_frac: float = 0.1              # for datasets without an official split
    test_frac: float = 0.1
    exclude_subjects: str | None = None  # file: one raw patient id per line
    views: str | None = None           # comma list, e.g. "PA,AP"
    lateral_ratio: float | None = None  # keep at most (#frontal / ratio) laterals
    part: str | None = None            # "i/N"
    dry_run: bool = False
    strict: bool = False
    overwrite: bool = False
    max_megapixels: float = 200.0
    csv: str | None = None             # folder source: optional labels/reports CSV
    contact_sheet: int = 24            # images in OUT/contact_sheet.png (labels + mask outlines); 0 = none

    def validate(self) -> None:
        if self.bits not in (8, 16):
            raise ValueError(f"--bits must be 8 or 16, not {self.bits}")
        if not (isinstance(self.png_level, int) and 0 <= self.png_level <= 9):
            raise ValueError(f"--png-level must be 0..9, not {self.png_level!r}")
        if self.split not in (*SPLITS, "all"):
            raise ValueError(f"--split must be train|val|test|all, not {self.split!r}")
        if self.size < 8 or self.shard_size < 1 or self.workers < 0:
            raise ValueError("--size must be >= 8, --shard-size >= 1 and --workers >= 0")
        if not 0 <= self.val_frac + self.test_frac < 1:
            raise ValueError("val_frac + test_frac must be in [0, 1)")
        if self.part is not None:
            parse_part(self.part)
            if self.salt is None:
                raise ValueError("--part needs an explicit --salt shared by all parts (patient hashes must agree)")


class StrictError(RuntimeError):
    pass


def parse_part(part: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in part.split("/"))
    except ValueError:
        raise ValueError(f"--part must look like i/N (e.g. 0/4), not {part!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--part {part}: need 0 <= i < N")
    return i, n


def _unit_hash(*parts: Any) -> float:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(h[:15], 16) / 16 ** 15


def patient_hash(salt: str, patient: str) -> str:
    return hashlib.sha256(f"{salt}:{patient}".encode()).hexdigest()[:16]


def assign_split(seed: int, patient: str, val_frac: float, test_frac: float) -> str:
    """Deterministic patient-level split: all images of a patient land in the same split."""
    u = _unit_hash("split", seed, patient)
    return "test" if u < test_frac else "val" if u < test_frac + val_frac else "train"


# ------------------------------------------------------------------------------------------------- plan

@dataclass
class Plan:
    shards: list[tuple[str, str, list[SourceItem]]]  # (name, split, items) for THIS part
    total_shards: int
    excluded: dict[str, int]
    rejected: list[dict]                              # found while planning (duplicate keys)
    missing: dict | None = None                       # presence.missing_summary of listed-but-absent images
    all_names: tuple[str, ...] = ()                   # every part's shard names (stale-shard cleanup)


def present_items(source: Source, items: list[SourceItem]) -> tuple[list[SourceItem], dict | None]:
    """The items whose image is on disk, and (when some are not) a grouped summary of the absent ones."""
    present = split_present(it.path for it in items)
    if all(present):
        return items, None
    listed = [(absolute(it.path), ok) for it, ok in zip(items, present) if it.path is not None]
    paths = [p for p, _ in listed]
    summary = missing_summary(paths, [ok for _, ok in listed], common_folder(paths), what=source.name)
    return [it for it, ok in zip(items, present) if ok], summary


def make_plan(cfg: PrepareConfig, source: Source) -> Plan:
    excluded: Counter = Counter()
    rejected: list[dict] = []
    exclude = set()
    if cfg.exclude_subjects:
        exclude = {ln.strip() for ln in Path(cfg.exclude_subjects).read_text().splitlines() if ln.strip()}
    views = {v.strip().upper() for v in cfg.views.split(",")} if cfg.views else None
    seen: set[str] = set()
    listed: list[SourceItem] = []
    for it in source.items():
        if it.key in seen:
            rejected.append({"key": it.key, "path": str(it.path or ""), "reason": "duplicate key in the dataset"})
            continue
        seen.add(it.key)
        listed.append(it)
    found, missing = present_items(source, listed)  # before --n: it counts usable images
    items: list[SourceItem] = []
    for it in found:
        if it.split is None:
            it.split = assign_split(cfg.seed, it.patient, cfg.val_frac, cfg.test_frac)
        elif it.split == "trainval":  # official training set: carve out a patient-level validation split
            it.split = assign_split(cfg.seed, it.patient, cfg.val_frac, 0.0)
        elif it.split not in SPLITS:
            raise ValueError(f"source {cfg.dataset} gave split {it.split!r} for {it.key}")
        if str(it.patient) in exclude:
            excluded["exclude_subjects"] += 1
        elif views is not None and it.view not in views:
            excluded["view_filter"] += 1
        elif cfg.split != "all" and it.split != cfg.split:
            excluded["split_filter"] += 1
        else:
            items.append(it)
    if cfg.lateral_ratio:
        n_front = sum(it.view in FRONTAL for it in items)
        lat = [it for it in items if it.view in LATERAL]
        keep = int(n_front / cfg.lateral_ratio)
        if len(lat) > keep:  # deterministic choice of which laterals stay
            drop = {it.key for it in sorted(lat, key=lambda it: _unit_hash("lat", cfg.seed, it.key))[keep:]}
            items = [it for it in items if it.key not in drop]
            excluded["lateral_ratio"] += len(drop)
    if cfg.n is not None and cfg.dataset != "synthetic" and len(items) > cfg.n:
        keep_keys = {it.key for it in sorted(items, key=lambda it: _unit_hash("n", cfg.seed, it.key))[:cfg.n]}
        excluded["n_cap"] += len(items) - cfg.n
        items = [it for it in items if it.key in keep_keys]
    shards = []
    for split in SPLITS:
        chunk = [it for it in items if it.split == split]
        for j in range(0, len(chunk), cfg.shard_size):
            shards.append((shard_name(split, j // cfg.shard_size), split, chunk[j:j + cfg.shard_size]))
    total, names = len(shards), tuple(name for name, _, _ in shards)
    if cfg.part:
        i, n = parse_part(cfg.part)
        shards = [s for k, s in enumerate(shards) if k % n == i]
    return Plan(shards, total, dict(excluded), rejected, missing, names)


# ----------------------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(source: Source, size: int, bits: int, salt: str, png_level: int = PNG_LEVEL) -> None:
    _WORKER.update(source=source, size=size, bits=bits, salt=salt, png_level=png_level)


def _process(item: SourceItem) -> tuple[str, Any]:
    """One item → ('ok', (key, files, meta, mask names)) or ('rejected', {path, key, reason})."""
    w = _WORKER
    try:
        rec = w["source"].load(item)
        rec.patient = patient_hash(w["salt"], item.patient)
        if item.meta.get("hash_study") and rec.study:  # e.g. accession numbers: identifiers, so salted too
            rec.study = patient_hash(w["salt"], f"study:{rec.study}")
        rec.split = item.split
        rec.key = item.key
        files = encode_record(rec, w["size"], w["bits"], w["png_level"])
        return "ok", (item.key, files, rec.meta(), sorted(rec.masks))
    except DecodeError as e:
        return "rejected", {"key": item.key, "path": e.path, "reason": e.reason, "state": file_state(e.path)}
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a 800K-image run; reason is recorded
        path = str(item.path or item.key)
        return "rejected", {"key": item.key, "path": path, "reason": f"unexpected {type(e).__name__}: {e}",
                            "state": file_state(path)}


def n_workers(requested: int) -> int:
    if requested > 0:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus))


def _results(cfg: PrepareConfig, source: Source, salt: str, items: list[SourceItem]) -> Iterator[tuple[str, Any]]:
    workers = n_workers(cfg.workers)
    if workers <= 1 or len(items) < MIN_PARALLEL_ITEMS:
        _init_worker(source, cfg.size, cfg.bits, salt, cfg.png_level)
        yield from map(_process, items)
        return
    # spawn: safe with any parent state (threads, torch); sources are picklable by contract
    ctx = mp.get_context("spawn")
    init = (source, cfg.size, cfg.bits, salt, cfg.png_level)
    with ctx.Pool(workers, initializer=_init_worker, initargs=init) as pool:
        yield from pool.imap(_process, items, chunksize=max(1, min(16, len(items) // (workers * 8))))


# ------------------------------------------------------------------------------------------- main side

def _resolve_salt(cfg: PrepareConfig, out: Path) -> str:
    if cfg.salt is not None:
        return cfg.salt
    path = out / ".salt"  # private to the producer; never inside the shards or the manifest
    if path.exists():
        return path.read_text().strip()
    salt = secrets.token_hex(16)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(salt + "\n")
    return salt


def public_config(cfg: PrepareConfig, salt: str | None) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["salt"] = None
    d["salt_id"] = hashlib.sha256(f"salt-id:{salt}".encode()).hexdigest()[:12] if salt is not None else None
    return d


# settings that do not change the shard bytes: not in the fingerprint
NOT_FINGERPRINTED = ("workers", "part", "dry_run", "strict", "overwrite", "out", "root", "contact_sheet")
# settings added after shard folders existed, with the value those folders were written with: left out of the
# fingerprint at that value, so folders written before the setting existed keep their fingerprint (and resume)
LATER_SETTINGS = {"png_level": PNG_LEVEL}


def fingerprint(cfg: PrepareConfig, salt: str) -> str:
    """What determines the shard contents: not workers, part or flags, and not where ROOT is mounted (parts
    written on several machines must agree); input files named by path count by their content."""
    d = public_config(cfg, salt)
    for k in NOT_FINGERPRINTED:
        d.pop(k)
    for k, old in LATER_SETTINGS.items():
        if d[k] == old:
            d.pop(k)
    for k in ("exclude_subjects", "csv"):
        if d[k]:
            d[k] = file_sha256(d[k])
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def config_changes(old: dict, new: dict) -> list[str]:
    """'name: old → new' for the fingerprinted settings that differ between an earlier manifest's config and ours
    (a manifest written before a setting existed has that setting's LATER_SETTINGS value)."""
    keys = sorted((set(old) | set(new)) - set(NOT_FINGERPRINTED) - {"salt"})
    changes = []
    for k in keys:
        a, b = old.get(k, LATER_SETTINGS.get(k)), new.get(k, LATER_SETTINGS.get(k))
        if a != b:
            changes.append(f"{k.replace('_', '-')}: {a!r} → {b!r}")
    return changes


def source_options(cfg: PrepareConfig) -> dict[str, Any]:
    if cfg.dataset == "synthetic":
        return {"n": cfg.n if cfg.n is not None else 1000, "seed": cfg.seed, "size": cfg.size}
    return {"csv": cfg.csv} if cfg.csv else {}


def prepare_data(cfg: PrepareConfig, progress=None) -> dict[str, Any]:
    """Run prepare-data. Returns the manifest (or, with dry_run, the plan summary). `progress`: a rich Progress."""
    cfg.validate()
    out = Path(cfg.out)
    source = get_source(cfg.dataset, cfg.root, **source_options(cfg))
    source.max_megapixels = cfg.max_megapixels
    plan = make_plan(cfg, source)
    part = parse_part(cfg.part) if cfg.part else None
    mpath = out / (mf.part_manifest_name(*part) if part else mf.MANIFEST)
    jpath = out / mf.journal_name(mpath.name)
    about = {"notes": list(getattr(source, "notes", [])), "warnings": list(getattr(source, "warnings", []))}

    if cfg.dry_run:
        return {"dry_run": True, "out": str(out), "part": cfg.part, "total_shards": plan.total_shards,
                "shards": [{"name": n, "split": s, "items": len(it),
                            "exists": (out / n).exists()} for n, s, it in plan.shards],
                "items": sum(len(it) for _, _, it in plan.shards), "excluded": plan.excluded,
                "rejected": plan.rejected, "missing": plan.missing, "source": about}

    salt = _resolve_salt(cfg, out)
    fp = fingerprint(cfg, salt)
    conf = public_config(cfg, salt)
    done = earlier_entries(out, mpath, jpath, fp, cfg.overwrite, explain=lambda old: config_changes(old, conf))
    out.mkdir(parents=True, exist_ok=True)
    for name, _, _ in plan.shards:  # a crashed run's partial shards (only ours: other parts may be writing)
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    for name in set(done) - set(plan.all_names):  # shards the plan no longer has (e.g. fewer images now)
        (out / name).unlink(missing_ok=True)

    entries: dict[str, dict] = {}
    pending = []
    for name, split, items in plan.shards:
        if still_valid(out, done.get(name), items):
            entries[name] = done[name]
        else:
            pending.append((name, split, items))

    def index(complete: bool) -> dict:  # the manifest: written when the run starts work and when it ends
        m = mf.build_manifest(conf, fp, list(entries.values()), plan.excluded, complete, part, len(plan.shards),
                              plan_rejected=plan.rejected, missing=plan.missing, source=about)
        write_json(mpath, m)
        return m

    if not pending:
        manifest = index(True)
        jpath.unlink(missing_ok=True)
    else:
        journal = mf.Journal(jpath, fp, entries.values())
        manifest = _write_pending(cfg, source, salt, out, pending, entries, journal, index, progress)
    if cfg.contact_sheet and manifest["counts"]["total"]:
        write_contact_sheet(out, cfg.contact_sheet, only=[s["name"] for s in manifest["shards"]])
    if part and all((out / mf.part_manifest_name(i, part[1])).exists() for i in range(part[1])):
        try:  # the last part to finish merges (parts written into one shared folder)
            manifest = mf.merge_part_manifests(out)
        except ValueError as e:
            warnings.warn(f"{out}: part manifests not merged ({e}); run `radjepa merge-manifests {out}`")
    return manifest


def _write_pending(cfg, source, salt, out, pending, entries, journal, index, progress) -> dict:
    """Decode and write the shards still to do; each finished shard costs one journal line, not a manifest."""
    index(False)  # a reader sees an incomplete folder from now until the final index
    n_todo = sum(len(it) for _, _, it in pending)
    task = progress.add_task(f"{cfg.dataset} → {out.name}", total=n_todo) if progress is not None else None
    results = _results(cfg, source, salt, [item for _, _, items in pending for item in items])
    complete = False
    try:
        for name, split, items in pending:
            stats = mf.new_shard_stats()
            w = ShardWriter(out / name)
            try:
                for _ in items:
                    status, payload = next(results)
                    if status == "rejected":
                        if cfg.strict:
                            raise StrictError(f"{payload['path']}: {payload['reason']} (--strict)")
                        stats["rejected"].append(payload)
                    else:
                        key, files, meta, masks = payload
                        w.write(key, files)
                        mf.add_sample(stats, meta, masks)
                    if task is not None:
                        progress.advance(task)
            except BaseException:
                w.abort()
                raise
            if w.count:
                w.close()
            else:  # every input rejected: no empty tar, the rejections are still recorded
                w.abort()
                (out / name).unlink(missing_ok=True)
            entries[name] = mf.shard_entry(name, split, w.count, w.sha256, w.nbytes, stats, plan_digest(items))
            journal.append(entries[name])
        complete = True
    finally:
        results.close()  # terminates the pool when the run stops early
        manifest = index(complete)
        journal.close(remove=complete)
    return manifest


def write_contact_sheet(out: Path, n: int, only: list[str] | None = None) -> Path | None:
    """OUT/contact_sheet.png: the first `n` samples of this run's shards, for a person to look at."""
    from .contact_sheet import contact_sheet
    from .shards import decode_sample, iter_tar
    records = []
    for name in sorted(only if only is not None else [p.name for p in out.glob("*.tar")]):
        for key, files in iter_tar(out / name):
            records.append(decode_sample(key, files))
            if len(records) >= n:
                return contact_sheet(records, out / "contact_sheet.png")
    return contact_sheet(records, out / "contact_sheet.png") if records else None


def image_progress(console=None):
    """A rich progress bar with images/s (used by prepare-data and the loader benchmark)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, \
        TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed or 0:.1f} img/s", style="progress.data.speed")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
