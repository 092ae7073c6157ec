"""``trillium medical``: chest-CT studies (phantom, deid, train, analyze, analyze-batch, detect-eval,
nodule-eval), clinical-note structuring (``records``) and the patient view joining both."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from trillium.medical.imaging.cli import register as register_imaging
from trillium.medical.records.cli import app as records_app

app = typer.Typer(help="Medical: chest-CT nodule analysis, clinical notes (records ...) and the patient view "
                       "joining notes with CT findings.", no_args_is_help=True)
app.add_typer(records_app, name="records")
register_imaging(app)


@app.command("patient")
def patient_cmd(
    patient_id: str = typer.Argument(None, help="Patient id; leave out to list the patients in the database."),
    json_out: str = typer.Option("-", "--json", help="Write the view here (JSON; '-' for stdout)."),
) -> None:
    """One patient's problems, medications, allergies, vitals, labs and CT findings across notes and studies."""
    from trillium.core.audit import cli_actor
    from trillium.core.db import connect
    from trillium.medical.store import list_patients, patient_view

    payload = patient_view(patient_id) if patient_id else {"patients": list_patients()}
    # a patient's record (or the list of who is in the database) was read: attributable to the OS account
    if patient_id:
        connect().audit("medical.patient.view", target=patient_id, actor=cli_actor(), patient=patient_id,
                        notes=len(payload["notes"]), ct_studies=len(payload["ct_studies"]))
    else:
        connect().audit("medical.patient.list", actor=cli_actor(), patients=len(payload["patients"]))
    if patient_id and not payload["notes"] and not payload["ct_studies"]:
        from trillium.core.cli import fail
        from trillium.core.errors import InputValidationError

        fail(InputValidationError(f"no notes or CT studies stored for patient {patient_id!r}"))
    text = json.dumps(payload, indent=2, default=str)
    if json_out == "-":
        typer.echo(text)
    else:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(text)
