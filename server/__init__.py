"""The late after-sales entry and commission clawback service."""
