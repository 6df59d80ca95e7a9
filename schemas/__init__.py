"""The bus contract: every message that crosses the knd bus is defined here."""
