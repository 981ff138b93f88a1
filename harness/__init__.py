"""voicechaos harness: simulated callers, measurement, scenarios and the CLI."""
