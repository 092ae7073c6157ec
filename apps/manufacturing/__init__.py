"""trillium.manufacturing: one vertical on the shared core (see DESIGN.md)."""
