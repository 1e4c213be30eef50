"""The ChromeOS deprovision bot's domain: commands, workflow, RBAC, Graph, devices, store, audit, settings."""
