"""prepare-data throughput: wall clock and CPU time for phantom shards and for decoding a real DICOM radiograph.

    python benchmarks/prepare_data.py --n 2000 --workers 2 --out benchmarks/results/prepare_data.json
    python benchmarks/prepare_data.py --partial mimic-cxr,nih14 --out benchmarks/results/prepare_data_partial.json

Issue 2 target: `radjepa prepare-data synthetic --n 2000` in under 2 minutes on 2 cores. CPU seconds (this process
plus its workers) give the per-core rate, independent of how busy a shared machine is; wall time and the load
average say how busy it was. Also times the per-sample stages (phantom render, PNG + mask encoding) and the
decode + resize of RG1_UNCR.dcm (1955x1841, 15-bit) as a stand-in for real DICOM datasets.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from radjepa_cli.io import write_json  # noqa: E402


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def end_to_end(n: int, workers: int, size: int) -> dict:
    from radjepa_cli.data.prepare import PrepareConfig, prepare_data
    out = Path(tempfile.mkdtemp(prefix="radjepa-bench-"))
    try:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        m = prepare_data(PrepareConfig(dataset="synthetic", out=str(out), n=n, size=size, workers=workers, salt="b"))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        nbytes = sum(s["bytes"] for s in m["shards"])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"stage": "prepare-data synthetic (end to end)", "n": n, "workers": workers, "size": size, "wall_s": wall,
            "cpu_s": cpu, "images_per_s_wall": n / wall, "images_per_s_per_core": n / cpu,
            "mb_per_image": nbytes / n / 1e6}


def stages(n: int, size: int) -> list[dict]:
    from radjepa_cli.data.decode import decode_image
    from radjepa_cli.data.embedded import rg1_dicom
    from radjepa_cli.data.phantom import PhantomConfig, generate
    from radjepa_cli.data.shards import encode_record, resize_shorter
    cfg = PhantomConfig(size=size, seed=0)
    rows = []
    t = time.process_time()
    recs = [generate(i, cfg) for i in range(n)]
    rows.append({"stage": f"phantom render {size}px", "ms_cpu": 1000 * (time.process_time() - t) / n})
    t = time.process_time()
    for r in recs:
        encode_record(r, size)
    rows.append({"stage": "encode PNG + json + 29 masks", "ms_cpu": 1000 * (time.process_time() - t) / n})
    k = max(3, n // 20)
    t = time.process_time()
    for _ in range(k):
        resize_shorter(decode_image(rg1_dicom()), size)
    rows.append({"stage": f"decode RG1 DICOM 1955x1841 + resize to {size}", "ms_cpu": 1000 * (time.process_time() - t) / k})
    return rows


def _tiny_jpeg(size: int = 160) -> bytes:
    import io
    import numpy as np
    from PIL import Image
    from radjepa_cli.data.phantom import PhantomConfig, generate
    buf = io.BytesIO()
    Image.fromarray((generate(0, PhantomConfig(size=size, seed=0)).image * 255).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def mimic_replica(root: Path, rows: int = 377_110, present_frac: float = 0.01) -> int:
    """MIMIC-CXR-JPG's three CSVs at full size (official headers; 65,379 subjects, 227,827 studies spread over
    files/p10..p19) with `present_frac` of the images on disk, all under files/p10 (a partial download)."""
    import gzip
    subjects, studies = 65_379, 227_827
    meta = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
            "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
            "PatientOrientationCodeSequence_CodeMeaning"]
    split, chex, seen, paths = ["dicom_id,study_id,subject_id,split"], [], set(), []
    from radjepa_cli.data.labels import CHEXPERT_14
    chex.append("subject_id,study_id," + ",".join(CHEXPERT_14))
    for r in range(rows):
        sid = str(10_000_000 + (r * subjects // rows) * (9_999_999 // subjects))
        study = str(50_000_000 + r * studies // rows)
        dicom = f"{r:08x}-bde0afdd-112c0b34-7bc16630-4e384014"
        meta.append(f"{dicom},{sid},{study},CHEST (PA AND LAT),{'PA' if r % 2 else 'LATERAL'},3056,2544,21800506,"
                    "213014.531,Chest (PA and Lateral),postero-anterior,Erect")
        split.append(f"{dicom},{study},{sid},{'test' if r % 50 == 0 else 'validate' if r % 50 == 1 else 'train'}")
        if study not in seen:
            seen.add(study)
            chex.append(f"{sid},{study},1.0" + "," * 13)
        paths.append(root / f"files/p{sid[:2]}/p{sid}/s{study}/{dicom}.jpg")
    for name, lines in (("metadata", meta), ("chexpert", chex), ("split", split)):
        with gzip.open(root / f"mimic-cxr-2.0.0-{name}.csv.gz", "wt", compresslevel=1) as f:
            f.write("\n".join(lines) + "\n")
    jpeg, n = _tiny_jpeg(), int(rows * present_frac)
    for p in paths[:n]:  # the first subjects: all in files/p10
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(jpeg)
    return n


def nih_replica(root: Path, present: int = 8) -> int:
    """The real 112,120-row Data_Entry_2017_v2020.csv (torchxrayvision's package data) with `present` images."""
    import gzip
    from radjepa_cli.data.embedded import package_file
    with gzip.open(package_file("torchxrayvision", "data", "Data_Entry_2017_v2020.csv.gz"), "rt") as f:
        text = f.read()
    (root / "Data_Entry_2017_v2020.csv").write_text(text)
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.open(io.BytesIO(_tiny_jpeg())).save(buf, "PNG")
    for line in text.splitlines()[1:present + 1]:
        p = root / "images_001/images" / line.split(",")[0]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(buf.getvalue())
    return present


def partial(dataset: str, workers: int, size: int) -> dict:
    """prepare-data on a partial download at real CSV size: wall/CPU time, shards, empty shards, the summary."""
    from radjepa_cli.data.prepare import PrepareConfig, prepare_data
    tmp = Path(tempfile.mkdtemp(prefix=f"radjepa-partial-{dataset}-"))
    try:
        root = tmp / "in"
        root.mkdir()
        t = time.perf_counter()
        present = mimic_replica(root) if dataset == "mimic-cxr" else nih_replica(root)
        build_s = time.perf_counter() - t
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        m = prepare_data(PrepareConfig(dataset=dataset, root=str(root), out=str(tmp / "out"), size=size,
                                       workers=workers, salt="b", contact_sheet=0))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        tars = sorted((tmp / "out").glob("*.tar"))
        row = {"stage": f"prepare-data {dataset}, partial download", "listed": (m["missing"] or {}).get("listed"),
               "present": present, "samples": m["counts"]["total"], "shards": len(tars),
               "empty_tars": sum(1 for p in tars if p.stat().st_size <= 1024), "workers": workers, "size": size,
               "wall_s": wall, "cpu_s": cpu, "replica_build_s": build_s,
               "manifest_bytes": (tmp / "out/manifest.json").stat().st_size, "missing_summary": m["missing"]["text"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{row['stage']}: {row['listed']:,} listed, {row['present']:,} present → {row['samples']:,} samples in "
          f"{row['shards']} shards ({row['empty_tars']} empty) in {wall:.1f} s wall, {cpu:.1f} CPU-s; "
          f"manifest {row['manifest_bytes']:,} B\n  missing: {row['missing_summary']}")
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--stage-n", type=int, default=50, help="samples for the per-stage timings")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/prepare_data.json"))
    ap.add_argument("--partial", default="", help="comma list of mimic-cxr,nih14: only the partial-download "
                    "benchmarks (377,110-row MIMIC replica with 1%% of images; real NIH CSV with 8 images)")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if a.partial:
        load0 = os.getloadavg()[0]
        rows = [partial(d.strip(), a.workers, a.size) for d in a.partial.split(",") if d.strip()]
        result = {"benchmark": "prepare_data --partial", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{platform.machine()} {os.cpu_count()} cpus, load {load0:.1f} → {os.getloadavg()[0]:.1f}",
                  "command": "python benchmarks/prepare_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "target": "issue 17: <= 120 s on 2 cores, no empty shard, one grouped missing summary",
                  "partial": rows}
        write_json(a.out, result)
        print(f"wrote {a.out}")
        return result
    load0 = os.getloadavg()[0]
    per_stage = stages(a.stage_n, a.size)
    e2e = end_to_end(a.n, a.workers, a.size)
    for r in per_stage:
        print(f"{r['stage']:<48s} {r['ms_cpu']:8.1f} ms CPU")
    print(f"{e2e['stage']}: n={a.n} workers={a.workers}: {e2e['wall_s']:.1f} s wall, {e2e['cpu_s']:.1f} CPU-s → "
          f"{e2e['images_per_s_per_core']:.1f} img/s per core, {e2e['images_per_s_wall']:.1f} img/s wall "
          f"(load average {load0:.1f} on {os.cpu_count()} cpus)")
    result = {"benchmark": "prepare_data", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, load {load0:.1f} → {os.getloadavg()[0]:.1f}",
              "command": "python benchmarks/prepare_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "target": "synthetic --n 2000 in < 120 s on 2 cores", "stages": per_stage, "end_to_end": e2e}
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
