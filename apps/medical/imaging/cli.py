"""Chest-CT commands of ``trillium medical``: phantom, deid, train, analyze, analyze-batch,
detect-eval and nodule-eval. Every command turns a Trillium error into a one-line message and
exit code 1 instead of a traceback."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trillium.core.cli_options import address_option, engine_option, max_failed_chunks_option, workers_option

if TYPE_CHECKING:
    from trillium.medical.imaging.analyzer import StudyAnalyzer


def _fail(exc: Exception) -> None:
    """The one error line and exit code (2) of every ``trillium`` command."""
    from trillium.core.cli import fail

    fail(exc)


BACKEND_HELP = "Candidate filters: scipy, torch or auto (torch where CUDA is present)."


def _analyzer(name: str, ref: str, backend: str = "auto", device: str | None = None) -> StudyAnalyzer:
    """The registered nodule model ``name`` at ``ref`` (a version number or an alias); when it
    is missing the error says how to train one."""
    from trillium.core.errors import InputValidationError, TrilliumError
    from trillium.medical.imaging.analyzer import StudyAnalyzer
    from trillium.medical.imaging.candidates import resolve_backend

    try:
        resolve_backend(backend)
    except ValueError as exc:
        _fail(InputValidationError(f"--backend: {exc}"))
    try:
        return StudyAnalyzer.from_registry(name, int(ref) if ref.isdigit() else ref, backend=backend, device=device)
    except TrilliumError as exc:
        raise type(exc)(f"{exc} (train one with: trillium medical train)") from exc


def _emit(payload: dict, json_out: str | None) -> None:
    text = json.dumps(payload, indent=2, default=str)
    if json_out in (None, "-"):
        typer.echo(text)
    else:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(text)
        typer.echo(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    """Add the imaging commands to the ``medical`` group."""

    @app.command("phantom")
    def phantom_cmd(
        out: Path = typer.Argument(..., help="Folder to write the DICOM series and truth.json into."),
        nodules: int = typer.Option(5, "--nodules", help="Number of nodules (4-30 mm)."),
        seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same study."),
        slices: int = typer.Option(140, "--slices", help="Axial slices."),
        size: int = typer.Option(256, "--size", help="Rows and columns per slice."),
        spacing: str = typer.Option("1.5,1.4,1.4", "--spacing", help="Slice, row, column spacing in mm."),
        patient_id: str = typer.Option(None, "--patient-id", help="PatientID to write (default PHANTOM-<seed>)."),
        rle: bool = typer.Option(False, "--rle", help="Write RLE Lossless compressed pixel data."),
    ) -> None:
        """Write a synthetic chest CT (body, lungs, vessels, nodules, noise) as a DICOM series with its truth."""
        from trillium.core.errors import TrilliumError
        from trillium.medical.imaging.phantom import write_phantom

        try:
            sp = tuple(float(v) for v in spacing.split(","))
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"--spacing {spacing!r}: three positive numbers, e.g. 1.5,1.4,1.4")
            truth = write_phantom(out, nodules=nodules, seed=seed, shape=(slices, size, size), spacing=sp,
                                  patient_id=patient_id, compression="rle" if rle else None)
        except (TrilliumError, ValueError) as exc:
            _fail(exc)
        typer.echo(f"wrote {slices} slices to {out} (series {truth['series_uid']}), "
                   f"{len(truth['nodules'])} nodules in {out / 'truth.json'}")

    @app.command("deid")
    def deid_cmd(
        src: Path = typer.Argument(..., help="DICOM file or folder (recursive)."),
        dst: Path = typer.Argument(..., help="Output folder (<study>/<series>/<instance>.dcm, no PHI in names)."),
        salt_file: Path = typer.Option(None, "--salt-file",
                                       help="File holding the secret that makes pseudonyms, UIDs and date shifts "
                                            "consistent across runs (mode 600: owner only); or set "
                                            "TRILLIUM_DEID_SALT. Never on the command line, where ps and shell "
                                            "histories show it. Without either a random one is used for this run."),
        keep_private: bool = typer.Option(False, "--keep-private", help="Keep private tags (not Basic Profile)."),
    ) -> None:
        """De-identify after the DICOM PS3.15 Basic Application Level Confidentiality Profile."""
        import os

        from trillium.core.errors import TrilliumError
        from trillium.core.users import read_secret
        from trillium.medical.imaging.deid import deidentify_tree

        try:
            salt = (read_secret(file=salt_file, what="de-identification salt") if salt_file is not None
                    else os.environ.get("TRILLIUM_DEID_SALT") or None)
        except TrilliumError as exc:
            _fail(exc)
        if not salt:
            salt = secrets.token_hex(16)
            typer.echo("no --salt / TRILLIUM_DEID_SALT: a random salt is used, so a later run will map "
                       "the same patients to different pseudonyms", err=True)
        try:
            report = deidentify_tree(src, dst, salt=salt, keep_private=keep_private)
        except TrilliumError as exc:
            _fail(exc)
        typer.echo(f"de-identified {report.written} files of {report.patients} patient(s) into {dst}; "
                   f"skipped {len(report.skipped)}")
        for path, reason in report.skipped:
            typer.echo(f"  skipped {path}: {reason}", err=True)

    @app.command("train")
    def train_cmd(
        studies: int = typer.Option(16, "--studies", help="Phantom studies to train on."),
        val_studies: int = typer.Option(4, "--val-studies", help="Further studies that choose the threshold."),
        epochs: int = typer.Option(10, "--epochs", help="Epochs per network."),
        seed: int = typer.Option(0, "--seed"),
        max_fp: float = typer.Option(0.5, "--max-fp", help="False positives per scan allowed at the threshold."),
        name: str = typer.Option("chest-ct-nodules", "--model", help="Registry name."),
        json_out: str = typer.Option(None, "--json", help="Write the training report here."),
        real_series: list[Path] = typer.Option(
            [], "--real-series", help="A real series folder with its readers' marks (LIDC XML inside, or VOC boxes "
                                      "beside); repeat it. Its anatomy joins training: real false candidates, "
                                      "synthetic nodules in its lungs, its lesions. Report no figure on it."),
        real_copies: int = typer.Option(2, "--real-copies", min=0, help="Copies of each real series with synthetic nodules."),
    ) -> None:
        """Train the nodule classifier on phantom studies (and real series, if given) and register it as production."""
        from trillium.core.audit import cli_actor
        from trillium.core.db import connect
        from trillium.core.errors import TrilliumError
        from trillium.medical.imaging.phantom_training import train_nodule_model

        def audit_read(patient: str | None, series_uid: str) -> None:
            # a real series is a patient's CT: its read for training is attributable like any other
            connect().audit("medical.ct.train", target=series_uid, actor=cli_actor(), patient=patient or "")

        try:
            report = train_nodule_model(studies=studies, val_studies=val_studies, epochs=epochs, seed=seed,
                                        max_fp_per_scan=max_fp, name=name, real_series=real_series,
                                        real_copies=real_copies, on_read=audit_read,
                                        log_fn=lambda m: typer.echo(m, err=True))
        except TrilliumError as exc:
            _fail(exc)
        _emit({"model": f"{report.record.name}:v{report.record.version}" if report.record else None,
               "seconds": round(report.seconds, 1), **report.metrics}, json_out)

    @app.command("analyze")
    def analyze_cmd(
        study: Path = typer.Argument(..., help="DICOM folder (recursive), zip, or one file of the series."),
        json_out: str = typer.Option("-", "--json", help="Findings JSON ('-' for stdout)."),
        heatmaps: Path = typer.Option(None, "--heatmaps", help="Write captum heatmap overlays (PNG) here."),
        dicom_out: Path = typer.Option(None, "--dicom", help="Write a DICOM SEG and SR of the findings here."),
        series_uid: str = typer.Option(None, "--series-uid", help="Analyse this series (default: the axial CT one)."),
        interpolate: bool = typer.Option(False, "--interpolate-missing",
                                         help="Fill a missing slice by interpolation (with a warning) "
                                              "instead of refusing the series."),
        store: bool = typer.Option(True, "--store/--no-store", help="Store the study and findings in the database."),
        name: str = typer.Option("chest-ct-nodules", "--model"),
        ref: str = typer.Option("production", "--ref"),
        backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
        device: str = typer.Option(None, "--device", help="torch device for --backend torch (default: CUDA when present)."),
    ) -> None:
        """Find, measure and classify lung nodules in one CT study."""
        from trillium.core.errors import TrilliumError
        from trillium.medical.imaging.analyzer import store_result

        try:
            analyzer = _analyzer(name, ref, backend, device)
        except TrilliumError as exc:
            _fail(exc)
        try:
            result = analyzer.analyze(study, series_uid=series_uid, interpolate_missing=interpolate)
            if heatmaps is not None:
                from trillium.medical.imaging.explain import explain_findings

                explain_findings(result, analyzer.classifier, heatmaps)
                result.heatmap_dir = str(Path(heatmaps).resolve())
            payload = result.as_json()
            if dicom_out is not None:
                from trillium.medical.imaging.dicom_export import export_findings

                masks = [m.full_mask(result.shape) for m in result.measurements]
                payload["dicom"] = export_findings(result.volume, result.findings, masks, dicom_out)
            if store:
                payload["stored_study_id"] = store_result(result)
            from trillium.core.audit import cli_actor
            from trillium.core.db import connect

            # a read of a patient's CT, attributable like every other (the OS account running it)
            connect().audit("medical.ct.analyze", target=result.series_uid, actor=cli_actor(),
                            patient=result.patient_id or "", source=str(study), findings=len(result.findings))
        except (TrilliumError, ValueError, OSError) as exc:
            _fail(exc)
        _emit(payload, json_out)

    @app.command("analyze-batch")
    def analyze_batch_cmd(
        root: Path = typer.Argument(..., help="Folder whose sub-folders (or zips) are studies."),
        output: Path = typer.Option(..., "--output", help="Summary: a .csv file or a folder of Parquet parts."),
        json_dir: Path = typer.Option(None, "--json-dir", help="Per-study findings JSON (default <output>_studies)."),
        chunk: int = typer.Option(4, "--chunk", help="Studies per checkpoint."),
        store: bool = typer.Option(True, "--store/--no-store"),
        restart: bool = typer.Option(False, "--restart", help="Start over instead of resuming."),
        name: str = typer.Option("chest-ct-nodules", "--model"),
        ref: str = typer.Option("production", "--ref"),
        engine: str = engine_option(),
        address: str | None = address_option(),
        workers: int | None = workers_option(),
        max_failed_chunks: int | None = max_failed_chunks_option(),
    ) -> None:
        """Analyse every study under ROOT as a resumable job; broken studies are quarantined with the reason."""
        from trillium.core.audit import cli_actor
        from trillium.core.errors import TrilliumError
        from trillium.core.jobs import check_engine, failed_chunk_limit
        from trillium.medical.imaging.batch import analyze_folder

        try:
            check_engine(engine)  # a missing extra is named before the model is loaded
            analyzer = _analyzer(name, ref)
            res = analyze_folder(analyzer, root, output, json_dir=json_dir, chunk_rows=chunk, store=store,
                                 resume=not restart, engine=engine, address=address, workers=workers,
                                 max_failed_chunks=failed_chunk_limit(max_failed_chunks), actor=cli_actor())
        except TrilliumError as exc:
            _fail(exc)
        job = res.job
        typer.echo(f"{job.status}: {job.rows_out} studies analysed, {job.rows_quarantined} quarantined "
                   f"-> {res.output} (findings JSON in {res.json_dir})")

    @app.command("real-eval")
    def real_eval_cmd(
        series: list[Path] = typer.Argument(..., help="Series folders of real CT, each with its marks: an LIDC "
                                                      "XML inside, or a VOC 'annotations' folder in or beside it."),
        min_readers: int = typer.Option(2, "--min-readers", min=1, max=4,
                                        help="Count lesions marked by at least this many readers (LUNA16: 3)."),
        json_out: str = typer.Option("-", "--json", help="The report as JSON ('-' for stdout)."),
        name: str = typer.Option("chest-ct-nodules", "--model"),
        ref: str = typer.Option("production", "--ref"),
    ) -> None:
        """Run the analyzer on real series and score it against the readers' marks: per series the
        lesions found and missed, false findings, centre and size errors."""
        from trillium.core.audit import cli_actor
        from trillium.core.db import connect
        from trillium.core.errors import TrilliumError
        from trillium.medical.imaging.real_eval import evaluate_series, summarise

        try:
            analyzer = _analyzer(name, ref)
        except TrilliumError as exc:
            _fail(exc)
        rows = []
        for folder in series:
            try:
                rows.append(evaluate_series(analyzer.analyze, folder, min_readers=min_readers))
            except (TrilliumError, ValueError, OSError) as exc:
                _fail(exc)
            r = rows[-1]
            # a read of a patient's CT, attributable like every other (the OS user running it)
            connect().audit("medical.ct.real_eval", target=r["series_uid"], actor=cli_actor(), source=str(folder),
                            patient=r["patient_id"] or "", findings=r["findings"], lesions=r["counted_lesions"])
            typer.echo(f"{folder}: {r['hits']}/{r['counted_lesions']} lesions found, "
                       f"{len(r['false_findings'])} false findings ({r['findings']} findings, {r['seconds']} s)", err=True)
        _emit({"model": analyzer.model_label, "min_readers": min_readers, "summary": summarise(rows), "series": rows},
              json_out)

    @app.command("detect-eval")
    def detect_eval_cmd(
        studies: int = typer.Option(8, "--studies", help="Fresh phantom studies (never used in training)."),
        nodules: int = typer.Option(6, "--nodules"),
        seed: int = typer.Option(900_000, "--seed"),
        json_out: str = typer.Option("-", "--json"),
        name: str = typer.Option("chest-ct-nodules", "--model"),
        ref: str = typer.Option("production", "--ref"),
        backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
        device: str = typer.Option(None, "--device", help="torch device for --backend torch (default: CUDA when present)."),
    ) -> None:
        """Detection on synthetic studies through DICOM: FROC, sensitivity at the threshold, size and centre errors."""
        from trillium.core.errors import TrilliumError
        from trillium.medical.imaging.candidates import resolve_backend
        from trillium.medical.imaging.phantom_training import evaluate_detection

        try:
            analyzer = _analyzer(name, ref, backend, device)
        except TrilliumError as exc:
            _fail(exc)
        report = evaluate_detection(analyzer, studies=studies, seed=seed, nodules=nodules,
                                    log_fn=lambda m: typer.echo(m, err=True))
        report["model"] = analyzer.model_label
        report["backend"] = backend if backend != "auto" else f"auto ({resolve_backend(backend)})"
        _emit(report, json_out)

    @app.command("nodule-eval")
    def nodule_eval_cmd(
        npz: Path = typer.Option(..., "--npz", help="NoduleMNIST3D .npz (official MedMNIST layout)."),
        json_out: str = typer.Option("-", "--json"),
        epochs: int = typer.Option(40, "--epochs"),
        seeds: int = typer.Option(1, "--seeds", help="Networks in the ensemble (one per seed)."),
        width: int = typer.Option(16, "--width"),
    ) -> None:
        """Train on the official train split, select on val, report test AUC and ACC against the MedMNIST table."""
        from trillium.core.errors import TrilliumError
        from trillium.medical.imaging.nodule_eval import evaluate_nodule_npz

        try:
            report = evaluate_nodule_npz(npz, epochs=epochs, seeds=tuple(range(seeds)), width=width,
                                         log=lambda m: typer.echo(m, err=True))
        except TrilliumError as exc:
            _fail(exc)
        _emit(report, json_out)
