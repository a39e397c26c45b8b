"""ServiceNow demands <-> Azure Boards work items: intake, sync worker, hook handlers, reconciliation."""
