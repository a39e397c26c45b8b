"""Adapters to the outside world: storage, warehouse, and (per capability) ServiceNow, Teams, ARM."""
