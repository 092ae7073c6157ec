"""Synthetic notes: reproducible, spans exact, every entity kind and attribute present; and the
agreement of the structurer with their truth (both built from the same lexicons)."""

import pandas as pd
import pytest

from trillium.medical.records.evaluate import entity_eval
from trillium.medical.records.notes import read_note
from trillium.medical.records.synth import SPECIALTIES, synthetic_notes, write_mtsamples_csv, write_notes_folder


def test_reproducible_and_spans_exact() -> None:
    a, b, c = synthetic_notes(40, seed=1), synthetic_notes(40, seed=1), synthetic_notes(40, seed=2)
    assert [n.text for n in a] == [n.text for n in b] and [n.text for n in a] != [n.text for n in c]
    notes = synthetic_notes(200, seed=3)
    for n in notes:
        for e in n.entities:
            assert n.text[e.start:e.end] == e.text
    kinds = {e.kind for n in notes for e in n.entities}
    assert kinds == {"problem", "medication", "allergy", "vital", "lab", "procedure"}
    for attr in ("negated", "uncertain", "historical", "family", "hypothetical"):
        assert any(getattr(e, attr) for n in notes for e in n.entities), attr
    assert {n.specialty for n in notes} == set(SPECIALTIES) and len(SPECIALTIES) >= 8
    assert len({n.patient_id for n in notes}) < len(notes)  # some patients have several notes
    words = [len(n.text.split()) for n in notes]
    assert 120 <= min(words) and max(words) <= 450
    with pytest.raises(ValueError, match="unknown specialties"):
        synthetic_notes(2, specialties=["Astrology"])


def test_writers(tmp_path) -> None:
    notes = synthetic_notes(6, seed=4)
    paths = write_notes_folder(notes, tmp_path / "notes")
    read = read_note(paths[0])
    assert read.patient_id == notes[0].patient_id and read.text.endswith(notes[0].text)
    assert (tmp_path / "notes" / "truth.json").is_file()
    frame = pd.read_csv(write_mtsamples_csv(notes, tmp_path / "m.csv"), index_col=0)
    assert list(frame.columns) == ["description", "medical_specialty", "sample_name", "transcription", "keywords"]
    assert frame["transcription"].tolist() == [n.text for n in notes]


def test_synthetic_truth_scores_generator_lexicon_agreement() -> None:
    """The generator writes its notes from the same lexicons the structurer matches with, so this
    F1 measures how well the two agree (a regression guard for either), not extraction quality on
    text the lexicons did not produce: ``test_structurer.py::test_hand_written_discharge_summary``
    checks that on a note written by hand."""
    report = entity_eval(synthetic_notes(80, seed=7))
    assert report["overall"]["f1"] > 0.95
    assert report["by_kind"]["medication"]["recall"] > 0.95
    assert report["attribute_accuracy"]["negated"] > 0.97
