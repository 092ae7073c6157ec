"""The finance vertical's entry in the core (the ``trillium.verticals`` entry point)."""

from trillium.core.verticals import Vertical

VERTICAL = Vertical(
    name="finance",
    title="Finance: credit-card fraud scoring",
    cli="trillium.finance.cli:app",
    demo="trillium.finance.demo:finance_demo",
    service="trillium.finance.service:router",
    service_demo="trillium.finance.service:demo_call",
    roles=(("fraud_analyst", ("finance:write",)),),
    monitoring="trillium.finance.monitoring:performance_for",
    order=10,
)
