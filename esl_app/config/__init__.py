"""Configuration: settings from arguments/environment, tenants.yaml."""
