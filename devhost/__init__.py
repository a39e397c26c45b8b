"""Development-only tooling: the local Functions host and Azurite control. Not deployed (.funcignore)."""
