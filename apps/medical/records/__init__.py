"""trillium.medical.records: free-text clinical notes structured into sections and entities.

Rules and lexicons written here (no model downloads): sections, sentences, entities with
character spans, ConText attributes (negated, uncertain, hypothetical, historical, family),
and a persisted similar-case index. Imaging lives beside it in ``trillium.medical``.
"""

from trillium.medical.records.notes import Note, NoteReadError, RejectedNote, load_notes, read_note
from trillium.medical.records.structurer import RecordStructurer, StructuredNote

__all__ = ["Note", "NoteReadError", "RecordStructurer", "RejectedNote", "StructuredNote", "load_notes", "read_note"]
