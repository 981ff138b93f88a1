"""The Locust load engine: many simulated calls across worker processes, with live voice figures and chaos."""
