"""The manufacturing vertical's entry in the core (the ``trillium.verticals`` entry point)."""

from trillium.core.verticals import Vertical

VERTICAL = Vertical(
    name="manufacturing",
    title="Manufacturing: visual defect detection",
    cli="trillium.manufacturing.cli:app",
    demo="trillium.manufacturing.demo:manufacturing_demo",
    tables="trillium.manufacturing.tables",
    service="trillium.manufacturing.service:router",
    service_demo="trillium.manufacturing.service:demo_call",
    roles=(("quality_engineer", ("manufacturing:write",)),),
    monitoring="trillium.manufacturing.corrections:performance_for",
    order=20,
)
