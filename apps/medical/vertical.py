"""The medical vertical's entry in the core (the ``trillium.verticals`` entry point)."""

from trillium.core.verticals import Vertical

VERTICAL = Vertical(
    name="medical",
    title="Medical: chest CT and clinical notes",
    cli="trillium.medical.cli:app",
    demo="trillium.medical.demo:medical_demo",
    tables="trillium.medical.tables",
    service="trillium.medical.service:router",
    service_demo="trillium.medical.service:demo_call",
    roles=(("clinician", ("medical:write",)),),
    order=30,
)
