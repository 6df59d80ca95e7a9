"""What every knd service shares: bus, credentials, config, logging, runner."""
