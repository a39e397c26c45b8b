"""Alert delivery: one Alert model, owner routing, Teams cards, ServiceNow incidents, an outbox."""
