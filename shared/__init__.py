"""ValueFlow Automations: the common library (pure domain logic and adapters)."""
