"""Shared plumbing for the services: NATS connection and provisioning, the consume loop and its ack
policy, lifecycle, settings, logging, signing. No domain logic lives here."""
